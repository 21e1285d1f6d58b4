"""Dataset loaders; importing this package registers each of them."""

from data.loaders import digits

__all__ = ["digits"]
