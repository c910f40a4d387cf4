"""Training tagging heads: data sets, the feature cache (one encoder pass, as in serving), torchrun support.

The data side: ``datasets`` (four data formats, label sets), ``features`` (``extract_features``,
``FeatureCache``, ``clip_features``), ``distributed`` (torchrun helpers), ``extract`` (the
``earmark extract`` command).
"""

from .datasets import Clip, Dataset, DatasetError, default_multi_label, detect_format, load_dataset, resolve_labels
from .features import CacheMismatchError, ClipRecord, ExtractReport, FeatureCache, clip_features, extract_features

__all__ = [
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
    "load_dataset",
    "resolve_labels",
]
