"""LayerNAS: layer-wise neural architecture search in polynomial complexity."""

__version__ = "0.1.0"
