"""Talking to a model: the continuous-batching engine, the OpenAI-compatible API, the chat CLI."""
