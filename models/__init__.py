"""Models for tuner: a registry of factories, a YAML name -> a ``torch.nn.Module``.

``build(name, num_classes=..., in_channels=..., image_size=..., **options)`` is the one entry
point; ``model_options(name)`` lists a model's options with their defaults. This package is plain
PyTorch / torchvision and never imports Ray; only ``models.serving`` (what a registered model
runs where it is served, shipped with it) uses MLflow's pyfunc interface.
"""

from models import airbench, cnn, inception, resnet, vgg  # noqa: F401  (registers the built-in models)
from models.registry import MODELS, ModelError, build, count_parameters, model_options, register

__all__ = ["MODELS", "ModelError", "build", "count_parameters", "model_options", "register"]
