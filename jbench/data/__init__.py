"""Data layer: the dataset registry, verified loading of the six benchmarks, downloads and the bundled sample.

Docs come out in the exact field layout and native order of the reference harness's HF loaders, so the task
templates and the few-shot RNG see what JP-stable saw.
"""

from jbench.data.download import download_datasets
from jbench.data.loader import (
    DataFileInfo,
    LoadedSplit,
    dataset_status,
    git_blob_sha1,
    load_split,
    resolve_data_dir,
    sample_data_dir,
)
from jbench.data.registry import DATASETS, MANIFEST_NAME, DatasetSpec, FileSpec

__all__ = [
    "DATASETS",
    "MANIFEST_NAME",
    "DataFileInfo",
    "DatasetSpec",
    "FileSpec",
    "LoadedSplit",
    "dataset_status",
    "download_datasets",
    "git_blob_sha1",
    "load_split",
    "resolve_data_dir",
    "sample_data_dir",
]
