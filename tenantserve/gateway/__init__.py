"""The OpenAI-compatible HTTP API: ASGI app, wire schemas, streaming."""
