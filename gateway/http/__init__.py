"""The HTTP edge: connection limits, host checks and the upstream SSE decoder."""
