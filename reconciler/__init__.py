"""reconciler: take an ML experiment from its description to its results, idempotently."""

__version__ = "0.1.0"
