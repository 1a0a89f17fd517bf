"""The in-process model tier: loading, generation, structured output and tools."""
