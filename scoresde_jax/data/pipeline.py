"""Host-side batching: each training batch is a pure function of ``(seed, step, process_index)``
(resuming needs only the step; a process reads only its slice); evaluation walks a split once,
padding and masking the last batch so shapes never change."""

from __future__ import annotations

import functools
import inspect
import queue
import threading
from collections.abc import Iterator

import numpy as np

from scoresde_jax.data.formats.base import ImageSource


def to_model_space(
    images: np.ndarray, *, centered: bool, dequantize_noise: np.ndarray | None = None
) -> np.ndarray:
    """uint8 images -> float32 ``images / 255`` (``[-1, 1]`` if ``centered``); with noise ``u`` in
    ``[0, 1)``, ``(images + u) / 256``: the paper's uniform dequantization."""
    x = np.asarray(images).astype(np.float32)
    if dequantize_noise is None:
        x = x / np.float32(255.0)
    else:
        if dequantize_noise.shape != x.shape:
            raise ValueError(f"dequantize_noise {dequantize_noise.shape} must match {x.shape}")
        # In float32, 255 + u rounds to 256 once u is within 2^-17 of 1 (and k + u to k + 1 for
        # smaller k), which would put a value on the upper bin edge; u <= 1 - 2^-16 keeps every
        # k + u below k + 1 exactly, so x stays strictly inside [k/256, (k+1)/256).
        u = np.clip(dequantize_noise.astype(np.float32), 0.0, np.float32(1 - 2**-16))
        x = (x + u) / np.float32(256.0)
    return 2.0 * x - 1.0 if centered else x


def _local_batch_size(global_batch_size: int, process_count: int, process_index: int) -> int:
    if global_batch_size < 1 or process_count < 1 or global_batch_size % process_count:
        raise ValueError(
            f"global batch size {global_batch_size} must be a positive multiple of the "
            f"{process_count} processes"
        )
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index {process_index} not in [0, {process_count})")
    return global_batch_size // process_count


@functools.lru_cache(maxsize=4)
def _epoch_permutation(seed: int, epoch: int, num_examples: int) -> np.ndarray:
    # A batch spans at most two epochs unless it is larger than the split, so a tiny cache saves
    # redrawing an O(N) permutation every step.
    perm = np.random.default_rng([seed, epoch]).permutation(num_examples)
    perm.setflags(write=False)
    return perm


def train_example_indices(
    num_examples: int,
    step: int,
    *,
    global_batch_size: int,
    seed: int,
    process_index: int = 0,
    process_count: int = 1,
) -> np.ndarray:
    """The int64 example indices of this process's part of batch ``step``: position
    ``p = step * G + j`` is ``perm(seed, p // N)[p % N]``; process ``i`` takes ``j`` in
    ``[i * L, (i + 1) * L)``."""
    if num_examples < 1:
        raise ValueError("the training split is empty")
    if step < 0 or seed < 0:
        raise ValueError(f"step ({step}) and seed ({seed}) must be non-negative")
    local = _local_batch_size(global_batch_size, process_count, process_index)
    positions = step * global_batch_size + process_index * local + np.arange(local, dtype=np.int64)
    epochs, offsets = np.divmod(positions, num_examples)
    indices = np.empty(local, np.int64)
    for epoch in np.unique(epochs).tolist():
        sel = epochs == epoch
        indices[sel] = _epoch_permutation(seed, epoch, num_examples)[offsets[sel]]
    return indices


def train_batch(
    source: ImageSource,
    step: int,
    *,
    global_batch_size: int,
    seed: int,
    random_flip: bool,
    centered: bool,
    uniform_dequantization: bool,
    process_index: int = 0,
    process_count: int = 1,
    return_labels: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """This process's part of batch ``step``: float32 ``[G / process_count, H, W, C]`` (and int32
    labels); flips and noise from ``default_rng([seed, step, process_index, 1])``."""
    indices = train_example_indices(
        len(source),
        step,
        global_batch_size=global_batch_size,
        seed=seed,
        process_index=process_index,
        process_count=process_count,
    )
    images, labels = source.get(indices)
    rng = np.random.default_rng([seed, step, process_index, 1])
    if random_flip:
        flip = rng.random(len(images)) < 0.5
        images = np.where(flip[:, None, None, None], images[:, :, ::-1], images)
    noise = rng.random(images.shape, dtype=np.float32) if uniform_dequantization else None
    x = to_model_space(images, centered=centered, dequantize_noise=noise)
    return (x, np.asarray(labels, np.int32)) if return_labels else x


class _WorkerError:
    def __init__(self, error: BaseException):
        self.error = error


class TrainIterator:
    """Yields ``(step, chunk)`` from ``start_step`` on, ``chunk[k] = train_batch(source, step + k,
    **batch_options)`` built in a background thread (at most ``prefetch`` waiting; its errors are
    raised by ``next``); :meth:`close` (or ``with``) stops it."""

    def __init__(
        self,
        source: ImageSource,
        *,
        start_step: int,
        steps_per_call: int = 1,
        prefetch: int = 2,
        **batch_options,
    ):
        if steps_per_call < 1 or prefetch < 1:
            raise ValueError(f"steps_per_call ({steps_per_call}) and prefetch ({prefetch}) >= 1")
        # Fail here, not in the thread.
        call = inspect.signature(train_batch).bind(source, start_step, **batch_options)
        call.apply_defaults()
        a = call.arguments
        _local_batch_size(a["global_batch_size"], a["process_count"], a["process_index"])
        self._make = functools.partial(train_batch, source, **batch_options)
        self._start_step = start_step
        self._steps_per_call = steps_per_call
        self._queue: queue.Queue = queue.Queue(maxsize=prefetch)
        self._stop = threading.Event()
        self._done = False
        self._thread = threading.Thread(target=self._work, name="TrainIterator", daemon=True)
        self._thread.start()

    def _put(self, item) -> bool:
        # Polls, so that close() can stop a thread waiting for room in a full queue.
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _work(self) -> None:
        step = self._start_step
        try:
            while not self._stop.is_set():
                chunk = np.stack([self._make(step + k) for k in range(self._steps_per_call)])
                if not self._put((step, chunk)):
                    return
                step += self._steps_per_call
        except BaseException as e:  # handed to the consumer, which re-raises it
            self._put(_WorkerError(e))

    def __iter__(self) -> Iterator[tuple[int, np.ndarray]]:
        return self

    def __next__(self) -> tuple[int, np.ndarray]:
        if self._done:
            raise StopIteration
        item = self._queue.get()
        if isinstance(item, _WorkerError):
            self.close()
            raise item.error
        return item

    def close(self) -> None:
        """Stops the thread (idempotent); ``next`` then raises ``StopIteration``."""
        self._done = True
        self._stop.set()
        while True:  # free room so a blocked put() notices the stop
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        self._thread.join(timeout=10)

    def __enter__(self) -> TrainIterator:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def num_eval_batches(
    source: ImageSource,
    *,
    global_batch_size: int,
    process_index: int = 0,
    process_count: int = 1,
    max_examples: int | None = None,
) -> int:
    """How many global batches :func:`eval_batches` yields (the same on every process)."""
    _local_batch_size(global_batch_size, process_count, process_index)
    n = len(source) if max_examples is None else min(len(source), max_examples)
    return -(-n // global_batch_size)


def eval_batches(
    source: ImageSource,
    *,
    global_batch_size: int,
    process_index: int = 0,
    process_count: int = 1,
    max_examples: int | None = None,
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """One pass over (the first ``max_examples`` of) a split: this process's part of each batch,
    ``(uint8 images, int32 labels, bool mask)``; past the end the last example repeats, masked."""
    local = _local_batch_size(global_batch_size, process_count, process_index)
    n = len(source) if max_examples is None else min(len(source), max_examples)
    for b in range(-(-n // global_batch_size)):
        positions = b * global_batch_size + process_index * local + np.arange(local)
        mask = positions < n
        indices = np.minimum(positions, n - 1)
        # Decode each example once: a padded tail repeats the same index many times.
        unique, inverse = np.unique(indices, return_inverse=True)
        images, labels = source.get(unique)
        yield images[inverse], labels[inverse], mask
