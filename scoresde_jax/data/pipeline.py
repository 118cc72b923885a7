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

_MAX_NOISE = np.float32(1 - 2**-16)


def to_model_space(
    images: np.ndarray, *, centered: bool, dequantize_noise: np.ndarray | None = None
) -> np.ndarray:
    """uint8 images -> float32 ``images / 255`` (``[-1, 1]`` if ``centered``); with noise ``u`` in
    ``[0, 1)``, ``(images + u) / 256``: the paper's uniform dequantization."""
    images = np.asarray(images)
    if dequantize_noise is not None:
        if dequantize_noise.shape != images.shape:
            raise ValueError(f"dequantize_noise {dequantize_noise.shape} must match {images.shape}")
        # In float32, 255 + u rounds to 256 once u is within 2^-17 of 1 (and k + u to k + 1 for
        # smaller k), which would put a value on the upper bin edge; u <= 1 - 2^-16 keeps every
        # k + u below k + 1 exactly, so x stays strictly inside [k/256, (k+1)/256).
        dequantize_noise = np.clip(dequantize_noise.astype(np.float32), 0.0, _MAX_NOISE)
    if images.dtype != np.uint8:
        images = images.astype(np.float32)
    out = np.empty(images.shape, np.float32)
    # All of it as one flat example: any shape, whole-array operations.
    noise = None if dequantize_noise is None else dequantize_noise.reshape(1, -1)
    _convert(images.reshape(1, -1), out.reshape(1, -1), centered=centered, noise=noise)
    return out


def _convert(
    images: np.ndarray,
    out: np.ndarray,
    *,
    centered: bool,
    noise: np.ndarray | None,
    flip: np.ndarray | None = None,
) -> None:
    """:func:`to_model_space` of ``images`` (``flip[k]``: example ``k`` mirrored) written into the
    float32 ``out``, ``noise`` already clipped: the same float32 operations in the same order, one
    example at a time so that each stays in cache between them."""
    mirrored = None
    for k in range(len(images)):
        x, o = images[k], out[k]
        if flip is not None and flip[k]:
            # A gather along the width copies whole pixels; reading x[:, ::-1] directly walks
            # 3-byte pixels backwards, several times slower.
            if mirrored is None:
                mirrored = np.empty_like(x)
                reverse = np.arange(x.shape[1] - 1, -1, -1)
            x = np.take(x, reverse, axis=1, out=mirrored)
        if noise is None:
            np.divide(x, np.float32(255.0), out=o)  # uint8 -> float32 is exact
        else:
            np.add(x, noise[k], out=o)
            np.divide(o, np.float32(256.0), out=o)
        if centered:
            np.multiply(o, np.float32(2.0), out=o)
            np.subtract(o, np.float32(1.0), out=o)


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
    out: np.ndarray | None = None,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """This process's part of batch ``step``: float32 ``[G / process_count, H, W, C]`` (and int32
    labels); flips and noise from ``default_rng([seed, step, process_index, 1])``; written into
    ``out`` when given."""
    indices = train_example_indices(
        len(source),
        step,
        global_batch_size=global_batch_size,
        seed=seed,
        process_index=process_index,
        process_count=process_count,
    )
    images, labels = source.get(indices)
    images = np.asarray(images)
    rng = np.random.default_rng([seed, step, process_index, 1])
    flip = rng.random(len(images)) < 0.5 if random_flip else None
    noise = None
    if uniform_dequantization:
        noise = rng.random(images.shape, dtype=np.float32)
        np.clip(noise, 0.0, _MAX_NOISE, out=noise)  # as to_model_space does
    if out is None:
        out = np.empty(images.shape, np.float32)
    elif out.shape != images.shape:
        raise ValueError(
            f"{source.name}: a batch of images {images.shape} does not match its image_shape "
            f"{tuple(source.image_shape)}"
        )
    if images.dtype != np.uint8:
        images = images.astype(np.float32)
    _convert(images, out, centered=centered, noise=noise, flip=flip)
    return (out, np.asarray(labels, np.int32)) if return_labels else out


class _WorkerError:
    def __init__(self, error: BaseException):
        self.error = error


class TrainIterator:
    """Yields ``(step, chunk)`` from ``start_step`` on, ``chunk[k] = train_batch(source, step + k,
    **batch_options)`` built in ``workers`` background threads (worker ``w`` builds calls ``w``,
    ``w + workers``, ...; at most ``prefetch`` finished chunks waiting, at least one per worker;
    its errors are raised by ``next`` in step order); :meth:`close` (or ``with``) stops them.

    Decoding (PIL) and the array operations release the GIL, so threads run in parallel; the
    chunks, each a pure function of its step, are the same for any number of workers."""

    def __init__(
        self,
        source: ImageSource,
        *,
        start_step: int,
        steps_per_call: int = 1,
        prefetch: int = 2,
        workers: int = 1,
        **batch_options,
    ):
        if steps_per_call < 1 or prefetch < 1 or workers < 1:
            raise ValueError(
                f"steps_per_call ({steps_per_call}), prefetch ({prefetch}) and workers "
                f"({workers}) must be >= 1"
            )
        if "out" in batch_options or batch_options.get("return_labels"):
            raise ValueError("TrainIterator builds images only: no out= or return_labels=")
        # Fail here, not in the threads.
        call = inspect.signature(train_batch).bind(source, start_step, **batch_options)
        call.apply_defaults()
        a = call.arguments
        local = _local_batch_size(a["global_batch_size"], a["process_count"], a["process_index"])
        self._chunk_shape = (steps_per_call, local, *source.image_shape)
        self._make = functools.partial(train_batch, source, **batch_options)
        self._start_step = start_step
        self._steps_per_call = steps_per_call
        self._workers = workers
        self._calls = 0  # chunks handed out
        per_worker = max(1, -(-prefetch // workers))
        self._queues = [queue.Queue(maxsize=per_worker) for _ in range(workers)]
        self._stop = threading.Event()
        self._done = False
        self._threads = [
            threading.Thread(
                target=self._work,
                args=(w,),
                name="TrainIterator" if workers == 1 else f"TrainIterator-{w}",
                daemon=True,
            )
            for w in range(workers)
        ]
        for thread in self._threads:
            thread.start()

    def _put(self, worker: int, item) -> bool:
        # Polls, so that close() can stop a thread waiting for room in a full queue.
        while not self._stop.is_set():
            try:
                self._queues[worker].put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _work(self, worker: int) -> None:
        n = self._steps_per_call
        step = self._start_step + worker * n
        try:
            while not self._stop.is_set():
                # Written in place: no per-step arrays stacked into the chunk afterwards.
                chunk = np.empty(self._chunk_shape, np.float32)
                for k in range(n):
                    self._make(step + k, out=chunk[k])
                if not self._put(worker, (step, chunk)):
                    return
                step += self._workers * n
        except BaseException as e:  # handed to the consumer, which re-raises it
            self._put(worker, _WorkerError(e))

    def __iter__(self) -> Iterator[tuple[int, np.ndarray]]:
        return self

    def __next__(self) -> tuple[int, np.ndarray]:
        if self._done:
            raise StopIteration
        item = self._queues[self._calls % self._workers].get()
        if isinstance(item, _WorkerError):
            self.close()
            raise item.error
        self._calls += 1
        return item

    def close(self) -> None:
        """Stops the threads (idempotent); ``next`` then raises ``StopIteration``."""
        self._done = True
        self._stop.set()
        for q in self._queues:  # free room so a blocked put() notices the stop
            while True:
                try:
                    q.get_nowait()
                except queue.Empty:
                    break
        for thread in self._threads:
            thread.join(timeout=10)

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
