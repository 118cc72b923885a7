"""Datasets: toy distributions made in code, and image sources (``open_image_source``) ->
deterministic per-process batches (``train_batch``, ``TrainIterator``, ``eval_batches``)."""

from scoresde_jax.data.formats import SOURCES, detect_source, open_image_source
from scoresde_jax.data.formats.base import (
    DATASETS,
    ArraySource,
    DatasetSpec,
    ImageSource,
    LazySource,
    TintedSource,
    dataset_spec,
)
from scoresde_jax.data.formats.idx import read_idx
from scoresde_jax.data.geometry import prepare_image
from scoresde_jax.data.pipeline import (
    TrainIterator,
    eval_batches,
    num_eval_batches,
    to_model_space,
    train_batch,
    train_example_indices,
)
from scoresde_jax.data.toy import TOY_DATASETS, TOY_GMM, make_toy_dataset, toy_density

__all__ = [
    "DATASETS",
    "SOURCES",
    "TOY_DATASETS",
    "TOY_GMM",
    "ArraySource",
    "TintedSource",
    "DatasetSpec",
    "ImageSource",
    "LazySource",
    "TrainIterator",
    "dataset_spec",
    "detect_source",
    "eval_batches",
    "make_toy_dataset",
    "num_eval_batches",
    "open_image_source",
    "prepare_image",
    "read_idx",
    "to_model_space",
    "toy_density",
    "train_batch",
    "train_example_indices",
]
