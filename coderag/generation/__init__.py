"""Question -> SQL: LLM clients (local transformers, OpenAI-compatible), the prompt, and the guarded answer."""
