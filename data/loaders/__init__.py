"""Dataset loaders; importing this package registers each of them."""

from data.loaders import cifar10, digits, fashion_mnist, image_folder, manifest, mnist

__all__ = ["cifar10", "digits", "fashion_mnist", "image_folder", "manifest", "mnist"]
