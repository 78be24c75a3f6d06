"""Data: the synthetic chest-CT benchmark, manifest datasets and caching."""

# Loading data sets (manifest / CTRG-Chest / CT-RATE) and the preprocessing cache.
from .cache import CachedVolumes, CacheError, CacheReport, open_cache, preprocess_dataset, processor_fingerprint
from .datasets import (
    DatasetError,
    LoadReport,
    dataset_disease_names,
    load_ct_report_dataset,
    load_ctrate_volume,
    load_example_volume,
)

__all__ = [
    "CacheError",
    "CacheReport",
    "CachedVolumes",
    "DatasetError",
    "LoadReport",
    "dataset_disease_names",
    "load_ct_report_dataset",
    "load_ctrate_volume",
    "load_example_volume",
    "open_cache",
    "preprocess_dataset",
    "processor_fingerprint",
]
