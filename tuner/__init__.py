"""tuner: hyperparameter search for image classifiers (YAML spec -> Ray Tune -> MLflow)."""

__version__ = "0.1.0"
