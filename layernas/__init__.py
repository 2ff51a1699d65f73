"""LayerNAS: layer-wise neural architecture search in polynomial complexity.

``layernas.load_model(RESULTS_DIR, rank=1)`` returns a found model ready to use, with its input
preprocessing (docs/export.md). It is imported on first use, so ``import layernas`` stays
torch-free (the workflow's controller and the config check rely on that)."""

__version__ = "0.1.0"

__all__ = ["__version__", "load_model"]


def __getattr__(name: str):
    if name == "load_model":
        from layernas.evaluate.loading import load_model

        return load_model
    raise AttributeError(f"module 'layernas' has no attribute {name!r}")
