"""Classical image classification as scikit-learn estimators: tiny images and bags of dense
SIFT words, classified by kNN or a linear SVM, with features cached on disk (report 004)."""

from models.classical.cache import FeatureCache, array_digest, cache_key
from models.classical.features import BagOfSift, TinyImage, extract_dense_sift
from models.classical.pipeline import CLASSIFIERS, FEATURES, build_pipeline, parameters

__all__ = [
    "CLASSIFIERS",
    "FEATURES",
    "BagOfSift",
    "FeatureCache",
    "TinyImage",
    "array_digest",
    "build_pipeline",
    "cache_key",
    "extract_dense_sift",
    "parameters",
]
