"""sepbench: where Transformers and recurrent models separate (../shared/papers.md)."""

__version__ = "0.1.0"
from sepbench.analysis import curves, results
from sepbench.runner import RunResult, run

__all__ = ["RunResult", "__version__", "curves", "results", "run"]
