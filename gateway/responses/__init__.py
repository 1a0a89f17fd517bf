"""The OpenAI Responses API: forwarded to upstreams that speak it, translated to chat completions otherwise."""
