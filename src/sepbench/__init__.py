"""sepbench: where Transformers and recurrent models separate (../shared/papers.md)."""

__version__ = "0.1.0"
