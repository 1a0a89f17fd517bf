// Drives a running Tiergate with the official openai npm package; prints one JSON object of what it saw.
// Usage: node openai_node.mjs BASE_URL   (BASE_URL ends in /v1)
import OpenAI from "openai";

const client = new OpenAI({ baseURL: process.argv[2], apiKey: "unused", maxRetries: 0, timeout: 10000 });
const messages = [{ role: "user", content: "Say hello" }];
const tools = [{
  type: "function",
  function: { name: "get_weather", parameters: { type: "object", properties: { city: { type: "string" } } } },
}];
const out = {};

const { data: chat, response: raw } = await client.chat.completions
  .create({ model: "tiergate-auto", messages })
  .withResponse();
out.chat = { content: chat.choices[0].message.content, tier: raw.headers.get("x-tiergate-tier") };

let streamed = "";
const stream = await client.chat.completions.create({ model: "tiergate-auto", messages, stream: true });
for await (const chunk of stream) streamed += chunk.choices[0]?.delta?.content ?? "";
out.stream = streamed;

const called = await client.chat.completions.create({ model: "tiergate-auto", messages, tools });
const call = called.choices[0].message.tool_calls[0];
out.tool_call = { id: call.id, name: call.function.name, arguments: call.function.arguments };
const { response: followRaw } = await client.chat.completions.create({
  model: "tiergate-auto", tools,
  messages: [...messages, called.choices[0].message, { role: "tool", tool_call_id: call.id, content: "21 C" }],
}).withResponse();
out.tool_follow_up_reason = followRaw.headers.get("x-tiergate-reason");

const response = await client.responses.create({ model: "tiergate-auto", input: "Say hello", instructions: "Be brief." });
out.responses = { text: response.output_text, status: response.status };

let responseText = "";
const types = [];
const events = await client.responses.create({ model: "tiergate-auto", input: "prove it", stream: true });
for await (const event of events) {
  types.push(event.type);
  if (event.type === "response.output_text.delta") responseText += event.delta;
}
out.responses_stream = { text: responseText, first: types[0], last: types[types.length - 1] };

console.log(JSON.stringify(out));
