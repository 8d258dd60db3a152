"""routecraft: LLM routing that reasons."""

__version__ = "0.1.0"
