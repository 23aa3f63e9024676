"""A tiny pure-Python capitalization "LLM" so the example experiment trains and evaluates in seconds."""
