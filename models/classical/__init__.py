"""Classical image classification as scikit-learn estimators (report 004, part 1).

Tiny images or bags of dense SIFT words, classified by kNN (``KNNClassifier``: brute force,
torch's distances) or a linear SVM::

    pipe = build_pipeline({"name": "bag_of_sift", "resize": 32, "vocab_size": 256},
                          {"name": "knn", "k": 5}, cache_dir="~/.cache/tuner/features")
    pipe.set_params(classifier__k=3).fit(train_x, train_y)

SIFT descriptors, vocabularies, histograms and the kNN's neighbours are cached on disk
(``cache.py``), so a sweep over classifier settings computes the features once, and the
distances once per kNN metric. No Ray, no MLflow: plain NumPy, OpenCV, sklearn,
and torch for the kNN's distances.
"""

from models.classical.bag_of_sift import BagOfSift
from models.classical.cache import FeatureCache, array_digest, cache_key
from models.classical.knn import KNNClassifier

# The classifiers' factories are reached by name, CLASSIFIERS["knn"]: ``models.classical.knn``
# is the module of KNNClassifier, not the factory.
from models.classical.pipeline import CLASSIFIERS, FEATURES, build_pipeline
from models.classical.sift import extract_dense_sift
from models.classical.tiny_image import TinyImage

__all__ = [
    "CLASSIFIERS",
    "FEATURES",
    "BagOfSift",
    "FeatureCache",
    "KNNClassifier",
    "TinyImage",
    "array_digest",
    "build_pipeline",
    "cache_key",
    "extract_dense_sift",
]
