"""Training tagging heads: data sets, the feature cache (one encoder pass, as in serving), torchrun support.

The data side: ``datasets`` (four data formats, label sets), ``features`` (``extract_features``,
``FeatureCache``, ``join_caches``, ``clip_features``), ``distributed`` (torchrun helpers),
``extract`` (the ``earmark extract`` command).
"""

from .datasets import Clip, Dataset, DatasetError, default_multi_label, detect_format, load_dataset, resolve_labels
from .features import (
    ArrayFeatures,
    CacheMismatchError,
    ClipRecord,
    ExtractReport,
    FeatureCache,
    clip_features,
    extract_features,
    join_caches,
)

__all__ = [
    "ArrayFeatures",
    "CacheMismatchError",
    "Clip",
    "ClipRecord",
    "Dataset",
    "DatasetError",
    "ExtractReport",
    "FeatureCache",
    "clip_features",
    "default_multi_label",
    "detect_format",
    "extract_features",
    "join_caches",
    "load_dataset",
    "resolve_labels",
]
