"""Datasets: registry, data root, checksummed downloads and fast on-device tensor loaders."""

from dla.data.registry import DatasetSpec, ImageSet, dataset_names, get_dataset, register_dataset
from dla.data.root import resolve_data_root
from dla.data.splits import Splits, load_splits

__all__ = [
    "DatasetSpec",
    "ImageSet",
    "Splits",
    "dataset_names",
    "get_dataset",
    "load_splits",
    "register_dataset",
    "resolve_data_root",
]
