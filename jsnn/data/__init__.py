"""Data sets for jsnn. The embedded default is scikit-learn's bundled handwritten digits."""

from jsnn.data.digits import load_digits

__all__ = ["load_digits"]
