"""alignlab: the InstructGPT recipe, its evaluations and predictable scaling, end to end."""

__version__ = "0.1.0"
