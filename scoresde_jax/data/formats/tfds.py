"""A TFDS dataset prepared in ``array_record`` format (random access); decoded lazily. Nothing is
downloaded: an offline cluster would hang, so the error says how to prepare the set."""

from __future__ import annotations

import numpy as np

from scoresde_jax.data.formats.base import DATASETS, LOCAL_FORMATS_HELP, LazySource, Target
from scoresde_jax.errors import DataError, MissingDataError


def _problem(tfds, tfds_name: str, data_dir: str | None, cause: Exception) -> str:
    """Why TFDS could not open the set, in words (its own errors talk about file formats)."""
    try:
        builder = tfds.builder(tfds_name, data_dir=data_dir)
        if not builder.is_prepared():
            return f"nothing is prepared at {builder.data_path}"
        file_format = builder.info.file_format
        return (
            f"it is prepared at {builder.data_path} as "
            f"{getattr(file_format, 'value', file_format)}: {str(cause).strip().splitlines()[0]}"
        )
    except Exception:  # only for the message: fall back to TFDS's own words
        text = str(cause).strip()
        return text.splitlines()[0] if text else type(cause).__name__


def open_split(
    dataset: str, split: str, target: Target, *, data_dir: str | None, category: str | None
) -> LazySource:
    spec = target.spec
    if spec.tfds_name is None:
        raise DataError(
            f"{dataset} is not in TFDS: it is read from TFRecord files (the StyleGAN layout, one "
            "file per resolution); pass --config.data.path=FILE_OR_FOLDER, e.g. the folder "
            f"holding ffhq-r08.tfrecords for 256x256"
        )
    tfds_name = spec.tfds_name
    if "{category}" in tfds_name:
        if not category:
            raise DataError(
                f"{dataset} needs a category: set --config.data.category, e.g. church_outdoor or "
                "bedroom"
            )
        tfds_name = tfds_name.format(category=category)
    tfds_split = spec.test_split if split == "test" else "train"

    # Imported here: only this reader needs TFDS, and importing it costs time.
    import tensorflow_datasets as tfds

    try:
        ds = tfds.data_source(tfds_name, split=tfds_split, data_dir=data_dir, download=False)
    except tfds.core.DatasetNotFoundError:
        raise DataError(
            f"TFDS has no dataset {tfds_name!r} (config.data.dataset={dataset!r}); known names "
            f"are {sorted(DATASETS)} or any TFDS name, or read a local copy with "
            f"--config.data.path=PATH; {LOCAL_FORMATS_HELP}"
        ) from None
    except (NotImplementedError, AssertionError, OSError, ValueError, KeyError) as e:
        problem = _problem(tfds, tfds_name, data_dir, e)
        raise MissingDataError(
            f"TFDS dataset {tfds_name!r} (split {tfds_split!r}) cannot be read with random "
            f"access ({problem}). Nothing is downloaded here; to prepare it, on a machine with "
            "internet access run\n"
            "    pip install tensorflow tensorflow-datasets\n"
            f"    tfds build {tfds_name} --file_format=array_record --data_dir=DIR\n"
            "and pass --config.data.data_dir=DIR (copy DIR over first if that machine is another "
            "one; without data_dir TFDS looks in ~/tensorflow_datasets or $TFDS_DATA_DIR). "
            f"Or read a local copy with --config.data.path=PATH; {LOCAL_FORMATS_HELP}."
        ) from e

    num_classes = spec.num_classes
    try:
        num_classes = int(ds.dataset_info.features["label"].num_classes)
    except (AttributeError, KeyError, TypeError):
        pass

    def read(i: int) -> tuple[np.ndarray, int]:
        example = ds[i]
        label = example.get("label")
        return np.asarray(example["image"]), -1 if label is None else int(label)

    return target.lazy(len(ds), read, num_classes, check_native_shape=False)
