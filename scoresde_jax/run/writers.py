"""Training logs: TensorBoard event files (written with the ``tensorboard`` package alone, no
TensorFlow) and a ``metrics.jsonl`` beside them."""

from __future__ import annotations

import io
import json
import os
import time
from collections.abc import Mapping

import numpy as np


def _png_bytes(image: np.ndarray) -> bytes:
    from PIL import Image

    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"images are logged as uint8 HWC arrays, got {image.dtype}")
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


class MetricWriter:
    """Writes scalars and images to ``logdir`` (TensorBoard) and scalars to ``jsonl_path``, one
    JSON object per call; ``enabled=False`` writes nothing (processes other than 0)."""

    def __init__(self, logdir: str, *, jsonl_path: str | None = None, enabled: bool = True):
        self.logdir = logdir
        self.jsonl_path = jsonl_path
        self.enabled = enabled
        self._events = None
        if enabled:
            from tensorboard.summary.writer.event_file_writer import EventFileWriter

            os.makedirs(logdir, exist_ok=True)
            self._events = EventFileWriter(logdir)

    def _write(self, step: int, values: list) -> None:
        from tensorboard.compat.proto import event_pb2, summary_pb2

        event = event_pb2.Event(
            wall_time=time.time(), step=int(step), summary=summary_pb2.Summary(value=values)
        )
        self._events.add_event(event)

    def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
        if not self.enabled:
            return
        from tensorboard.compat.proto import summary_pb2

        scalars = {k: float(v) for k, v in scalars.items()}
        values = [summary_pb2.Summary.Value(tag=k, simple_value=v) for k, v in scalars.items()]
        self._write(step, values)
        if self.jsonl_path:
            with open(self.jsonl_path, "a") as f:
                f.write(json.dumps({"step": int(step), **scalars}) + "\n")

    def write_images(self, step: int, images: Mapping[str, np.ndarray]) -> None:
        """Logs uint8 ``[H, W, C]`` images (e.g. a sample grid) under their names."""
        if not self.enabled:
            return
        from tensorboard.compat.proto import summary_pb2

        values = []
        for tag, image in images.items():
            image = np.asarray(image)
            h, w = image.shape[:2]
            c = image.shape[2] if image.ndim == 3 else 1
            encoded = summary_pb2.Summary.Image(
                height=h, width=w, colorspace=c, encoded_image_string=_png_bytes(image)
            )
            values.append(summary_pb2.Summary.Value(tag=tag, image=encoded))
        self._write(step, values)

    def close(self) -> None:
        if self._events is not None:
            self._events.close()
            self._events = None
