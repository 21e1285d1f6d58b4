"""Dataset loaders; importing this package registers each of them."""

from data.loaders import cifar10, digits, idx, image_folder

__all__ = ["cifar10", "digits", "idx", "image_folder"]
