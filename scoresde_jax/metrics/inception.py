"""The FID Inception-v3 network (the 2015-12-05 TensorFlow graph) in Flax, and its weights.

FID, the Inception Score and KID are defined by one particular network: the Inception-v3 graph
``inception-2015-12-05`` that TTUR, TF-GAN and the Improved-GAN code evaluate, and that
pytorch-fid ports as ``pt_inception-2015-12-05-6726825d.pth``. :class:`FIDInceptionV3` rebuilds
it on torchvision's ``Inception3`` layout with the graph's own quirks:

* every convolution is ``BasicConv2d``: convolution without bias, batch norm (eps 0.001, running
  statistics) and ReLU;
* the pooling branch of ``Mixed_5b/5c/5d`` (A blocks), ``Mixed_6b..6e`` (C blocks) and
  ``Mixed_7b`` (first E block) averages over a 3x3 window *without* counting the zero padding,
  as TensorFlow's average pooling does;
* the pooling branch of ``Mixed_7c`` (second E block) is a 3x3 **max** pool;
* 1008 classes in the classifier (the graph predates the 1001-class models).

Inputs follow pytorch-fid's ``InceptionV3`` defaults: NHWC images in ``[0, 1]`` (or ``uint8`` in
``[0, 255]``), bilinearly resized to 299x299 exactly as ``F.interpolate(mode="bilinear",
align_corners=False)`` without antialiasing (:func:`resize_bilinear`), then mapped to ``[-1, 1]``.

Outputs: ``pool_3`` (the 2048 globally averaged features that FID and KID use) and the
classifier logits for the Inception Score, over all 1008 classes: every reference takes the
softmax over all 1008 entries and none slices to the first 1000 (TF-GAN's
``classifier_score_from_logits``, which score_sde applies to the TF-Hub module's ``logits``;
the Improved-GAN script; torch-fidelity; StyleGAN2-ADA). They differ in the bias of the
classifier: the Improved-GAN script multiplies ``pool_3`` by the weight ``W`` alone, and
torch-fidelity (``logits_unbiased``, its default for IS) and StyleGAN2-ADA (``no_output_bias``)
copy that to reproduce its numbers; the complete layer, with the bias ``b``, scores about 0.3
higher on CIFAR-10 (openai/improved-gan#39). ``logits`` is the complete layer
``pool_3 @ W + b`` (the graph's ``softmax/logits``, the stored ``fc``) and ``logits_unbiased``
is ``pool_3 @ W``; use the one that matches the numbers you compare with, and say which.

Parameters mirror the PyTorch state dict: ``Mixed_7c/branch3x3dbl_3b/conv/kernel`` is
``Mixed_7c.branch3x3dbl_3b.conv.weight`` (OIHW -> HWIO), batch-norm ``scale``/``bias`` are
``bn.weight``/``bn.bias``, and the running statistics live in the ``batch_stats`` collection as
``mean``/``var`` (``bn.running_mean``/``bn.running_var``); ``fc/kernel`` is ``fc.weight``
transposed. :func:`load_inception_params` reads the official ``.pth`` (without PyTorch) or an
``.npz`` of the same keys.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
import os
import pickle
import struct
import zipfile
from collections import OrderedDict
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
from flax import traverse_util
from jax.sharding import Mesh

from scoresde_jax.core.mesh import batch_sharding, replicated

__all__ = [
    "INCEPTION_NUM_CLASSES",
    "INCEPTION_SIZE",
    "INCEPTION_WEIGHTS_ENV",
    "INCEPTION_WEIGHTS_NAME",
    "INCEPTION_WEIGHTS_SHA256",
    "INCEPTION_WEIGHTS_URL",
    "BasicConv2d",
    "FIDInceptionV3",
    "InceptionA",
    "InceptionB",
    "InceptionC",
    "InceptionD",
    "InceptionE",
    "find_inception_weights",
    "load_inception_params",
    "make_inception_fn",
    "preprocess_images",
    "read_torch_state_dict",
    "resize_bilinear",
    "variables_from_state_dict",
]

INCEPTION_SIZE = 299
INCEPTION_NUM_CLASSES = 1008
INCEPTION_WEIGHTS_NAME = "pt_inception-2015-12-05-6726825d.pth"
INCEPTION_WEIGHTS_URL = (
    "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
    + INCEPTION_WEIGHTS_NAME
)
# The file name carries the first 8 hex digits of its SHA-256 (torch.hub's convention, which
# pytorch-fid checks on download); the full digest below (95,628,359 bytes) starts with them.
# torch-fidelity distributes the same file as ``weights-inception-2015-12-05-6726825d.pth``.
INCEPTION_WEIGHTS_SHA256 = "6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2"
INCEPTION_WEIGHTS_ENV = "SCORESDE_INCEPTION_WEIGHTS"
_OFFICIAL_NAMES = (INCEPTION_WEIGHTS_NAME, "weights-inception-2015-12-05-6726825d.pth")
_DEFAULT_CACHE = Path("~/.cache/scoresde_jax")

Precision = Any  # anything jax.lax accepts as a precision
_HIGHEST = jax.lax.Precision.HIGHEST
_BN_EPS = 1e-3
_MIN_SIZE = 75  # smallest input the stem and the stride-2 blocks accept without resizing
_UINT8_TO_UNIT = np.arange(256, dtype=np.float32) / np.float32(255)  # torchvision's ToTensor


# ----------------------------------------------------------------------------------------------
# Input handling.


def _linear_taps(in_size: int, out_size: int) -> tuple[np.ndarray, ...]:
    """Source indices and weights of PyTorch's bilinear interpolation along one axis.

    ``F.interpolate(..., mode="bilinear", align_corners=False)`` samples output pixel ``d`` at
    ``max(scale * (d + 0.5) - 0.5, 0)`` with ``scale = in / out`` in float32 (half-pixel
    centres; the clamp repeats the first pixel), between ``floor`` of that and the next pixel,
    which is clamped to the last one. PyTorch's compiled x86-64 kernel evaluates the position
    with a fused multiply-add, rounding once (the FID fixture's resized image agrees bit for bit
    only then); the float64 evaluation here rounds once as well (the product of a float32 and
    ``d + 0.5`` is exact in float64), so indices and weights are PyTorch's.
    """
    scale = np.float64(np.float32(in_size) / np.float32(out_size))
    src = (scale * (np.arange(out_size) + 0.5) - 0.5).astype(np.float32)
    src = np.maximum(src, np.float32(0.0))
    i0 = np.minimum(src.astype(np.int64), in_size - 1)
    i1 = np.where(i0 < in_size - 1, i0 + 1, i0)
    w1 = np.clip(src - i0.astype(np.float32), np.float32(0.0), np.float32(1.0))
    w0 = np.float32(1.0) - w1
    return i0, i1, w0, w1


def _interpolate_axis(x: jax.Array, axis: int, out_size: int) -> jax.Array:
    i0, i1, w0, w1 = _linear_taps(x.shape[axis], out_size)
    shape = [1] * x.ndim
    shape[axis] = out_size
    w0 = jnp.asarray(w0.reshape(shape), x.dtype)
    w1 = jnp.asarray(w1.reshape(shape), x.dtype)
    return jnp.take(x, i0, axis=axis) * w0 + jnp.take(x, i1, axis=axis) * w1


def resize_bilinear(images: jax.Array, size: tuple[int, int]) -> jax.Array:
    """Bilinear resize of NHWC ``images`` to ``size = (height, width)``, as PyTorch does it.

    Matches ``F.interpolate(x, size, mode="bilinear", align_corners=False)`` without
    antialiasing, for upsampling and downsampling alike: half-pixel centres, edge pixels
    repeated, PyTorch's sampling positions and weights exactly (:func:`_linear_taps`). It is
    separable, along the width first and then the height, which is PyTorch's
    ``w_h0 (w_w0 x00 + w_w1 x01) + w_h1 (w_w0 x10 + w_w1 x11)``; PyTorch fuses these
    multiply-adds, so single pixels may differ in the last bit (at most 2.4e-7 on the FID
    fixture's 32 -> 299 resize, against 1.7e-6 when the positions are rounded twice).
    ``jax.image.resize(..., "bilinear", antialias=False)`` samples the same points but builds
    its weights differently (dense matrices, renormalised at the edges), which also lands
    within a few ulps; this version keeps PyTorch's arithmetic and gathers instead of
    multiplying by mostly-zero matrices.
    """
    height, width = size
    x = images
    if x.shape[2] != width:
        x = _interpolate_axis(x, 2, width)
    if x.shape[1] != height:
        x = _interpolate_axis(x, 1, height)
    return x


def preprocess_images(
    images: jax.Array, *, resize: bool = True, normalize: bool = True
) -> jax.Array:
    """NHWC images -> the float32 input of the network (pytorch-fid's ``InceptionV3`` defaults).

    ``uint8`` images are divided by 255, other dtypes are taken to be in ``[0, 1]``. With
    ``resize`` the images are resized to 299x299 by :func:`resize_bilinear` (images already of
    that size are left as they are, which is what PyTorch's resize does to them bit for bit);
    with ``normalize`` they are mapped to ``[-1, 1]`` by ``2x - 1``.
    """
    x = jnp.asarray(images)
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"expected NHWC RGB images [batch, height, width, 3], got {x.shape}")
    if x.dtype == jnp.uint8:
        # A table of the 256 quotients, divided on the host: XLA turns ``x / 255`` into a
        # multiplication by the rounded reciprocal, which is off by an ulp for half the values.
        x = jnp.take(jnp.asarray(_UINT8_TO_UNIT), x.astype(jnp.int32), axis=0)
    else:
        x = x.astype(jnp.float32)
    if resize and x.shape[1:3] != (INCEPTION_SIZE, INCEPTION_SIZE):
        x = resize_bilinear(x, (INCEPTION_SIZE, INCEPTION_SIZE))
    elif min(x.shape[1:3]) < _MIN_SIZE:
        raise ValueError(
            f"images of {x.shape[1]}x{x.shape[2]} are too small for Inception-v3 without "
            f"resizing (at least {_MIN_SIZE}x{_MIN_SIZE})"
        )
    if normalize:
        x = 2 * x - 1
    return x


# ----------------------------------------------------------------------------------------------
# The network.


def _avg_pool_3x3(x: jax.Array) -> jax.Array:
    # TensorFlow's average pool divides by the number of pixels inside the image, not 9.
    return nn.avg_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)), count_include_pad=False)


def _max_pool_3x3(x: jax.Array) -> jax.Array:
    return nn.max_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)))


def _max_pool_3x3_s2(x: jax.Array) -> jax.Array:
    return nn.max_pool(x, (3, 3), strides=(2, 2), padding="VALID")


class BasicConv2d(nn.Module):
    """Convolution without bias, batch norm with running statistics (eps 0.001) and ReLU."""

    features: int
    kernel_size: tuple[int, int]
    strides: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    precision: Precision = _HIGHEST

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        ph, pw = self.padding
        x = nn.Conv(
            self.features,
            self.kernel_size,
            strides=self.strides,
            padding=((ph, ph), (pw, pw)),
            use_bias=False,
            precision=self.precision,
            name="conv",
        )(x)
        x = nn.BatchNorm(use_running_average=True, epsilon=_BN_EPS, name="bn")(x)
        return nn.relu(x)


class InceptionA(nn.Module):
    """``Mixed_5b/5c/5d``: 1x1, 5x5, double 3x3 and an average-pool branch (padding not counted)."""

    pool_features: int
    precision: Precision = _HIGHEST

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        conv = functools.partial(BasicConv2d, precision=self.precision)
        b1 = conv(64, (1, 1), name="branch1x1")(x)
        b5 = conv(48, (1, 1), name="branch5x5_1")(x)
        b5 = conv(64, (5, 5), padding=(2, 2), name="branch5x5_2")(b5)
        b3 = conv(64, (1, 1), name="branch3x3dbl_1")(x)
        b3 = conv(96, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(b3)
        b3 = conv(96, (3, 3), padding=(1, 1), name="branch3x3dbl_3")(b3)
        bp = conv(self.pool_features, (1, 1), name="branch_pool")(_avg_pool_3x3(x))
        return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(nn.Module):
    """``Mixed_6a``: grid reduction 35 -> 17 (strided 3x3, strided double 3x3, max pool)."""

    precision: Precision = _HIGHEST

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        conv = functools.partial(BasicConv2d, precision=self.precision)
        b3 = conv(384, (3, 3), strides=(2, 2), name="branch3x3")(x)
        bd = conv(64, (1, 1), name="branch3x3dbl_1")(x)
        bd = conv(96, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(bd)
        bd = conv(96, (3, 3), strides=(2, 2), name="branch3x3dbl_3")(bd)
        return jnp.concatenate([b3, bd, _max_pool_3x3_s2(x)], axis=-1)


class InceptionC(nn.Module):
    """``Mixed_6b..6e``: factorised 7x7 branches and an average pool (padding not counted)."""

    channels_7x7: int
    precision: Precision = _HIGHEST

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        conv = functools.partial(BasicConv2d, precision=self.precision)
        c7 = self.channels_7x7
        b1 = conv(192, (1, 1), name="branch1x1")(x)
        b7 = conv(c7, (1, 1), name="branch7x7_1")(x)
        b7 = conv(c7, (1, 7), padding=(0, 3), name="branch7x7_2")(b7)
        b7 = conv(192, (7, 1), padding=(3, 0), name="branch7x7_3")(b7)
        bd = conv(c7, (1, 1), name="branch7x7dbl_1")(x)
        bd = conv(c7, (7, 1), padding=(3, 0), name="branch7x7dbl_2")(bd)
        bd = conv(c7, (1, 7), padding=(0, 3), name="branch7x7dbl_3")(bd)
        bd = conv(c7, (7, 1), padding=(3, 0), name="branch7x7dbl_4")(bd)
        bd = conv(192, (1, 7), padding=(0, 3), name="branch7x7dbl_5")(bd)
        bp = conv(192, (1, 1), name="branch_pool")(_avg_pool_3x3(x))
        return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(nn.Module):
    """``Mixed_7a``: grid reduction 17 -> 8 (strided 3x3, 7x7 then strided 3x3, max pool)."""

    precision: Precision = _HIGHEST

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        conv = functools.partial(BasicConv2d, precision=self.precision)
        b3 = conv(192, (1, 1), name="branch3x3_1")(x)
        b3 = conv(320, (3, 3), strides=(2, 2), name="branch3x3_2")(b3)
        b7 = conv(192, (1, 1), name="branch7x7x3_1")(x)
        b7 = conv(192, (1, 7), padding=(0, 3), name="branch7x7x3_2")(b7)
        b7 = conv(192, (7, 1), padding=(3, 0), name="branch7x7x3_3")(b7)
        b7 = conv(192, (3, 3), strides=(2, 2), name="branch7x7x3_4")(b7)
        return jnp.concatenate([b3, b7, _max_pool_3x3_s2(x)], axis=-1)


class InceptionE(nn.Module):
    """``Mixed_7b`` (``pool="avg"``, padding not counted) and ``Mixed_7c`` (``pool="max"``).

    The 3x3 convolutions are split into parallel 1x3 and 3x1 halves whose outputs are
    concatenated. The max pool of ``Mixed_7c`` is a quirk of the FID graph (Inception-v3 as
    published averages there); it is reproduced because the weights were trained with it.
    """

    pool: str = "avg"
    precision: Precision = _HIGHEST

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        if self.pool not in ("avg", "max"):
            raise ValueError(f"pool must be 'avg' or 'max', got {self.pool!r}")
        conv = functools.partial(BasicConv2d, precision=self.precision)
        b1 = conv(320, (1, 1), name="branch1x1")(x)
        b3 = conv(384, (1, 1), name="branch3x3_1")(x)
        b3 = jnp.concatenate(
            [
                conv(384, (1, 3), padding=(0, 1), name="branch3x3_2a")(b3),
                conv(384, (3, 1), padding=(1, 0), name="branch3x3_2b")(b3),
            ],
            axis=-1,
        )
        bd = conv(448, (1, 1), name="branch3x3dbl_1")(x)
        bd = conv(384, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(bd)
        bd = jnp.concatenate(
            [
                conv(384, (1, 3), padding=(0, 1), name="branch3x3dbl_3a")(bd),
                conv(384, (3, 1), padding=(1, 0), name="branch3x3dbl_3b")(bd),
            ],
            axis=-1,
        )
        pooled = _avg_pool_3x3(x) if self.pool == "avg" else _max_pool_3x3(x)
        bp = conv(192, (1, 1), name="branch_pool")(pooled)
        return jnp.concatenate([b1, b3, bd, bp], axis=-1)


class _Classifier(nn.Module):
    """The ``fc`` layer; returns ``(x @ kernel + bias, x @ kernel)``."""

    num_classes: int
    precision: Precision = _HIGHEST

    @nn.compact
    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        kernel = self.param(
            "kernel", nn.initializers.lecun_normal(), (x.shape[-1], self.num_classes)
        )
        bias = self.param("bias", nn.initializers.zeros_init(), (self.num_classes,))
        unbiased = jnp.dot(x, kernel, precision=self.precision)
        return unbiased + bias[None, :], unbiased


class FIDInceptionV3(nn.Module):
    """Inception-v3 as used for FID / IS / KID (the ``inception-2015-12-05`` graph), NHWC.

    Call it with ``variables`` from :func:`load_inception_params`::

        out = FIDInceptionV3().apply(variables, images)  # images [B, H, W, 3] in [0, 1]
        out["pool_3"]           # [B, 2048] features for FID / KID
        out["logits"]           # [B, 1008] pool_3 @ W + b
        out["logits_unbiased"]  # [B, 1008] pool_3 @ W (Improved-GAN / torch-fidelity IS)

    Attributes:
      resize_input: resize to 299x299 with :func:`resize_bilinear` (skipped for images that are
        already 299x299). Without it any size from 75x75 up goes in as it is.
      normalize_input: map ``[0, 1]`` to ``[-1, 1]``; turn off for images already in ``[-1, 1]``.
      precision: of every convolution and of the classifier. ``HIGHEST`` keeps float32 on GPUs
        and TPUs, whose default TF32/bf16 passes move the features far beyond FID's tolerance.

    With ``mutable=["intermediates"]`` the outputs of pytorch-fid's four blocks are sown as
    ``block0`` (after the first max pool, 64 channels), ``block1`` (second max pool, 192),
    ``block2`` (``Mixed_6e``, 768) and ``block3`` (``Mixed_7c`` before the global average pool,
    2048).
    """

    resize_input: bool = True
    normalize_input: bool = True
    precision: Precision = _HIGHEST

    @nn.compact
    def __call__(self, images: jax.Array) -> dict[str, jax.Array]:
        x = preprocess_images(images, resize=self.resize_input, normalize=self.normalize_input)
        p = self.precision
        conv = functools.partial(BasicConv2d, precision=p)
        x = conv(32, (3, 3), strides=(2, 2), name="Conv2d_1a_3x3")(x)
        x = conv(32, (3, 3), name="Conv2d_2a_3x3")(x)
        x = conv(64, (3, 3), padding=(1, 1), name="Conv2d_2b_3x3")(x)
        x = _max_pool_3x3_s2(x)
        self.sow("intermediates", "block0", x)
        x = conv(80, (1, 1), name="Conv2d_3b_1x1")(x)
        x = conv(192, (3, 3), name="Conv2d_4a_3x3")(x)
        x = _max_pool_3x3_s2(x)
        self.sow("intermediates", "block1", x)
        x = InceptionA(32, precision=p, name="Mixed_5b")(x)
        x = InceptionA(64, precision=p, name="Mixed_5c")(x)
        x = InceptionA(64, precision=p, name="Mixed_5d")(x)
        x = InceptionB(precision=p, name="Mixed_6a")(x)
        x = InceptionC(128, precision=p, name="Mixed_6b")(x)
        x = InceptionC(160, precision=p, name="Mixed_6c")(x)
        x = InceptionC(160, precision=p, name="Mixed_6d")(x)
        x = InceptionC(192, precision=p, name="Mixed_6e")(x)
        self.sow("intermediates", "block2", x)
        x = InceptionD(precision=p, name="Mixed_7a")(x)
        x = InceptionE("avg", precision=p, name="Mixed_7b")(x)
        x = InceptionE("max", precision=p, name="Mixed_7c")(x)
        self.sow("intermediates", "block3", x)
        pool_3 = jnp.mean(x, axis=(1, 2))
        logits, unbiased = _Classifier(INCEPTION_NUM_CLASSES, precision=p, name="fc")(pool_3)
        return {"pool_3": pool_3, "logits": logits, "logits_unbiased": unbiased}


def make_inception_fn(
    variables: Mapping[str, Any],
    mesh: Mesh | None = None,
    *,
    unbiased_logits: bool = False,
    **module_kwargs: Any,
) -> Callable[[jax.Array], tuple[jax.Array, jax.Array]]:
    """A compiled ``images -> (pool_3, logits)`` for batches of NHWC images.

    Args:
      variables: from :func:`load_inception_params`; placed on the devices once, here.
      mesh: optional mesh with a ``data`` axis (:func:`scoresde_jax.core.mesh.make_data_mesh`):
        the batch is split over it and the parameters are replicated. A batch whose size is not
        a multiple of the axis is padded with zeros for the call and the padding is cut off
        again, so any batch size works. Every process passes the same, global batch.
      unbiased_logits: return ``pool_3 @ W`` instead of ``pool_3 @ W + b`` (see the module
        docstring for which reference uses which).
      **module_kwargs: attributes of :class:`FIDInceptionV3` (``resize_input``, ...).

    Returns:
      A function of ``images`` (``[B, H, W, 3]``, float in ``[0, 1]`` or ``uint8``) returning
      ``pool_3`` ``[B, 2048]`` and ``logits`` ``[B, 1008]``, float32. It compiles once per
      input shape and dtype.
    """
    model = FIDInceptionV3(**module_kwargs)
    logits_key = "logits_unbiased" if unbiased_logits else "logits"

    def apply(variables, images):
        out = model.apply(variables, images)
        return out["pool_3"], out[logits_key]

    if mesh is None:
        variables = jax.device_put(variables)
        jitted = jax.jit(apply)
        return lambda images: jitted(variables, images)

    num_shards = mesh.shape["data"]
    data = batch_sharding(mesh)
    variables = jax.device_put(variables, replicated(mesh))
    jitted = jax.jit(apply, in_shardings=(replicated(mesh), data), out_shardings=(data, data))

    def run(images):
        n = images.shape[0]
        pad = -n % num_shards
        if pad:
            widths = [(0, pad)] + [(0, 0)] * (images.ndim - 1)
            if isinstance(images, jax.Array):
                images = jnp.pad(images, widths)
            else:
                images = np.pad(np.asarray(images), widths)
        pool_3, logits = jitted(variables, jax.device_put(images, data))
        if pad:
            pool_3, logits = pool_3[:n], logits[:n]
        return pool_3, logits

    return run


# ----------------------------------------------------------------------------------------------
# Reading PyTorch files without PyTorch.
#
# ``torch.save`` writes a pickle in which every tensor is a call
# ``torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks)`` and
# every storage a persistent id ``("storage", torch.<Type>Storage, key, location, numel)``; the
# storages' bytes follow outside the pickle. Since PyTorch 1.6 the file is a zip archive
# (``<name>/data.pkl``, ``<name>/data/<key>``); before that it was a sequence of pickles (magic
# number, protocol version, system info, the object, the list of storage keys) followed by each
# storage as an int64 element count and its raw bytes. The official FID weights (published in
# 2019, with PyTorch 1.1) predate the zip archive, so both layouts are read.
# The unpickler below knows only the globals such a state dict needs, so a file cannot make it
# run code.

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001

_STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "BFloat16Storage": ml_dtypes.bfloat16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


@dataclasses.dataclass(frozen=True)
class _StorageType:
    name: str

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(_STORAGE_DTYPES[self.name])


class _Storage:
    """A flat storage whose bytes are read after the pickle that refers to it."""

    def __init__(self, key: str, dtype: np.dtype, numel: int):
        self.key, self.dtype, self.numel = key, dtype, numel
        self.data: np.ndarray | None = None

    def fill(self, raw: bytes, byteorder: str = "little") -> None:
        if len(raw) != self.numel * self.dtype.itemsize:
            raise ValueError(
                f"storage {self.key} holds {len(raw)} bytes, expected {self.numel} elements of "
                f"{self.dtype.itemsize} bytes"
            )
        data = np.frombuffer(raw, self.dtype.newbyteorder("<" if byteorder == "little" else ">"))
        self.data = data.astype(self.dtype, copy=False)

    def array(self) -> np.ndarray:
        if self.data is None:
            raise ValueError(f"the file has no data for storage {self.key}")
        return self.data


class _StorageView(NamedTuple):  # legacy files: a storage sharing memory with another one
    base: _Storage
    offset: int
    numel: int

    def array(self) -> np.ndarray:
        return self.base.array()[self.offset : self.offset + self.numel]


class _TensorRef(NamedTuple):
    storage: _Storage | _StorageView
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]

    def to_numpy(self) -> np.ndarray:
        flat = self.storage.array()
        if any(s < 0 for s in self.size) or any(s < 0 for s in self.stride) or self.offset < 0:
            raise ValueError("negative tensor size, stride or offset")
        if 0 in self.size:
            return np.zeros(self.size, flat.dtype)
        last = self.offset + sum((n - 1) * s for n, s in zip(self.size, self.stride, strict=True))
        if last >= flat.size:
            raise ValueError(f"tensor reaches element {last} of a storage of {flat.size}")
        view = np.lib.stride_tricks.as_strided(
            flat[self.offset :],
            shape=self.size,
            strides=[s * flat.itemsize for s in self.stride],
            writeable=False,
        )
        return np.array(view)


def _rebuild_tensor_v2(
    storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None
):
    del requires_grad, backward_hooks, metadata
    return _TensorRef(storage, int(storage_offset), tuple(size), tuple(stride))


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None):
    del requires_grad, backward_hooks
    return data


_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    **{("torch", name): _StorageType(name) for name in _STORAGE_DTYPES},
}


def _as_str(value: Any) -> str:
    return value.decode("ascii") if isinstance(value, bytes) else str(value)


class _StateDictUnpickler(pickle.Unpickler):
    def __init__(self, file, storages: dict[str, _Storage]):
        super().__init__(file)
        self._storages = storages

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refusing to load {module}.{name}: only tensors and dicts of tensors are read"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        if not isinstance(pid, tuple) or len(pid) < 5 or _as_str(pid[0]) != "storage":
            raise pickle.UnpicklingError(f"unsupported persistent id {pid!r}")
        storage_type, key, _location, numel = pid[1:5]
        if not isinstance(storage_type, _StorageType):
            raise pickle.UnpicklingError(f"unsupported storage type {storage_type!r}")
        key = _as_str(key)
        storage = self._storages.get(key)
        if storage is None:
            storage = self._storages[key] = _Storage(key, storage_type.dtype, int(numel))
        view = pid[5] if len(pid) > 5 else None
        if view is not None:
            view_key, offset, view_numel = view
            del view_key
            return _StorageView(storage, int(offset), int(view_numel))
        return storage


def _materialize(obj: Any) -> Any:
    if isinstance(obj, _TensorRef):
        return obj.to_numpy()
    if isinstance(obj, Mapping):
        return {k: _materialize(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(_materialize(v) for v in obj)
    return obj


def _read_zip_pickle(path: Path) -> Any:
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        pickles = [n for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pickles) != 1:
            raise ValueError(f"{path} is a zip file but not a PyTorch archive (no */data.pkl)")
        prefix = pickles[0][: -len("data.pkl")]
        byteorder = "little"
        if prefix + "byteorder" in names:
            byteorder = archive.read(prefix + "byteorder").decode("ascii").strip()
        storages: dict[str, _Storage] = {}
        obj = _StateDictUnpickler(io.BytesIO(archive.read(pickles[0])), storages).load()
        for key, storage in storages.items():
            storage.fill(archive.read(f"{prefix}data/{key}"), byteorder)
    return _materialize(obj)


def _read_legacy_pickle(path: Path) -> Any:
    with open(path, "rb") as f:
        plain = lambda: _StateDictUnpickler(f, {}).load()
        if plain() != _LEGACY_MAGIC:
            raise ValueError(f"{path} is not a PyTorch file (wrong magic number)")
        version = plain()
        if version != _LEGACY_PROTOCOL:
            raise ValueError(f"{path}: unsupported PyTorch serialization protocol {version}")
        sys_info = plain()
        little = sys_info.get("little_endian", True) if isinstance(sys_info, Mapping) else True
        byteorder = "little" if little else "big"
        storages: dict[str, _Storage] = {}
        obj = _StateDictUnpickler(f, storages).load()
        for key in plain():
            key = _as_str(key)
            storage = storages[key]
            header = f.read(8)
            if len(header) != 8:
                raise ValueError(f"{path} ends before storage {key}")
            # The record header is the element count (PyTorch checks it the same way).
            (numel,) = struct.unpack("<q" if little else ">q", header)
            if numel != storage.numel:
                raise ValueError(
                    f"storage {key} has {numel} elements, the pickle says {storage.numel}"
                )
            storage.fill(f.read(storage.numel * storage.dtype.itemsize), byteorder)
    return _materialize(obj)


def read_torch_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Reads a ``torch.save``-d state dict (``.pth``/``.pt``) into numpy arrays, without torch.

    Both of PyTorch's formats are understood: the zip archive (PyTorch >= 1.6) and the older
    sequence of pickles. Only ``collections.OrderedDict``, tensors and typed storages may
    appear in the pickle; anything else is refused. If this reader fails and PyTorch is
    installed, ``torch.load(..., weights_only=True)`` gets a second try.

    Returns:
      Key -> array (dtypes as stored, e.g. float32 weights and int64 ``num_batches_tracked``).
    """
    path = Path(path)
    try:
        if zipfile.is_zipfile(path):
            obj = _read_zip_pickle(path)
        else:
            obj = _read_legacy_pickle(path)
    except Exception as err:  # whatever stopped the minimal reader, torch may still read it
        try:
            import torch
        except ImportError:
            raise ValueError(f"cannot read {path} as a PyTorch state dict: {err}") from err
        raw = torch.load(path, map_location="cpu", weights_only=True)
        obj = {
            k: v.detach().cpu().numpy() if hasattr(v, "detach") else np.asarray(v)
            for k, v in raw.items()
        }
    if not isinstance(obj, Mapping) or not all(
        isinstance(k, str) and isinstance(v, np.ndarray) for k, v in obj.items()
    ):
        raise ValueError(f"{path} does not hold a state dict (a mapping of names to tensors)")
    return dict(obj)


# ----------------------------------------------------------------------------------------------
# Weights.

_LEAF_TO_TORCH = {
    ("params", "kernel"): "weight",
    ("params", "scale"): "weight",
    ("params", "bias"): "bias",
    ("batch_stats", "mean"): "running_mean",
    ("batch_stats", "var"): "running_var",
}


def _from_torch_layout(value: np.ndarray, ndim: int) -> np.ndarray:
    if ndim == 4:  # Conv2d OIHW -> HWIO
        return np.transpose(value, (2, 3, 1, 0))
    if ndim == 2:  # Linear (out, in) -> (in, out)
        return np.transpose(value)
    return value


def _is_ignored(key: str) -> bool:
    # BN step counters are unused at inference; the auxiliary classifier is not part of FID.
    return key.endswith(".num_batches_tracked") or key.startswith("AuxLogits.")


@functools.cache
def _expected_entries() -> dict[str, tuple[str, tuple[str, ...], tuple[int, ...]]]:
    """Torch key -> (collection, Flax path, Flax shape) for every variable of the network."""
    shapes = jax.eval_shape(
        FIDInceptionV3().init,
        jax.random.key(0),
        jax.ShapeDtypeStruct((1, INCEPTION_SIZE, INCEPTION_SIZE, 3), jnp.float32),
    )
    entries = {}
    for collection in ("params", "batch_stats"):
        for path, leaf in traverse_util.flatten_dict(shapes[collection]).items():
            leaf_name = _LEAF_TO_TORCH[(collection, path[-1])]
            entries[".".join((*path[:-1], leaf_name))] = (collection, path, tuple(leaf.shape))
    return entries


def _listing(keys: list[str], limit: int = 8) -> str:
    more = f", ... ({len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def variables_from_state_dict(
    state_dict: Mapping[str, np.ndarray], *, source: str = "state dict"
) -> dict[str, Any]:
    """Flax variables of :class:`FIDInceptionV3` from the FID Inception's PyTorch state dict.

    Keys must match exactly (``*.num_batches_tracked`` and ``AuxLogits.*`` are ignored); values
    are cast to float32 (e.g. from float16) and transposed to Flax's layouts.

    Returns:
      ``{"params": ..., "batch_stats": ...}`` of float32 numpy arrays.

    Raises:
      ValueError: keys missing or unexpected (a few of each are listed), or shapes disagree.
    """
    expected = _expected_entries()
    given = {k: v for k, v in state_dict.items() if not _is_ignored(k)}
    missing = sorted(set(expected) - set(given))
    unexpected = sorted(set(given) - set(expected))
    if missing or unexpected:
        problems = []
        if missing:
            problems.append(f"{len(missing)} missing: {_listing(missing)}")
        if unexpected:
            problems.append(f"{len(unexpected)} unexpected: {_listing(unexpected)}")
        raise ValueError(
            f"{source} is not the FID Inception-v3 state dict; keys " + "; ".join(problems)
        )
    flat: dict[str, dict[tuple[str, ...], np.ndarray]] = {"params": {}, "batch_stats": {}}
    bad_shapes = []
    for key, (collection, path, shape) in expected.items():
        value = np.asarray(given[key])
        if not np.issubdtype(value.dtype, np.floating) and value.dtype != ml_dtypes.bfloat16:
            raise ValueError(f"{source}: {key} has dtype {value.dtype}, expected floating point")
        value = _from_torch_layout(value.astype(np.float32), len(shape))
        if value.shape != shape:
            bad_shapes.append(f"{key} {tuple(given[key].shape)}")
            continue
        flat[collection][path] = np.ascontiguousarray(value)
    if bad_shapes:
        raise ValueError(f"{source}: wrong shapes for {_listing(bad_shapes)}")
    return {name: traverse_util.unflatten_dict(tree) for name, tree in flat.items()}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_inception_params(path: str | os.PathLike, *, verify_sha256: bool = True) -> dict[str, Any]:
    """Variables of :class:`FIDInceptionV3` from a weights file.

    Args:
      path: the official ``pt_inception-2015-12-05-6726825d.pth`` (read without PyTorch; see
        :func:`find_inception_weights`), any ``.pth`` of the same state dict, or an ``.npz``
        with the same keys (any float dtype; cast to float32).
      verify_sha256: check the SHA-256 of files carrying the official name before reading them.

    Returns:
      ``{"params": ..., "batch_stats": ...}`` (float32 numpy arrays).

    Raises:
      ValueError: the official file's hash is wrong (truncated or another file), or the keys or
        shapes are not those of the FID Inception.
    """
    path = Path(path).expanduser()
    if path.suffix == ".npz":
        with np.load(path) as data:
            state_dict = {k: data[k] for k in data.files}
    else:
        if verify_sha256 and path.name in _OFFICIAL_NAMES:
            actual = _sha256(path)
            if actual != INCEPTION_WEIGHTS_SHA256:
                raise ValueError(
                    f"{path} has SHA-256 {actual}, but the official FID Inception weights have "
                    f"{INCEPTION_WEIGHTS_SHA256}; the file is damaged or a different one. "
                    f"Download it again from {INCEPTION_WEIGHTS_URL}"
                )
        state_dict = read_torch_state_dict(path)
    return variables_from_state_dict(state_dict, source=str(path))


def _display(path: Path) -> str:
    home = Path.home()
    try:
        return "~/" + str(path.relative_to(home))
    except ValueError:
        return str(path)


def find_inception_weights(
    path: str | os.PathLike | None = None, cache_dir: str | os.PathLike | None = None
) -> Path:
    """Locates the FID Inception weights; nothing is ever downloaded.

    Looks at, in order: ``path``; the environment variable ``SCORESDE_INCEPTION_WEIGHTS``;
    ``<cache_dir>/pt_inception-2015-12-05-6726825d.pth`` with ``cache_dir`` defaulting to
    ``~/.cache/scoresde_jax``.

    Raises:
      FileNotFoundError: the file is not there; the message holds the command that downloads it
        on a machine with internet access.
    """
    if path is not None:
        candidate, origin = Path(path).expanduser(), "the given path"
    elif os.environ.get(INCEPTION_WEIGHTS_ENV):
        candidate = Path(os.environ[INCEPTION_WEIGHTS_ENV]).expanduser()
        origin = f"${INCEPTION_WEIGHTS_ENV}"
    else:
        folder = Path(cache_dir).expanduser() if cache_dir is not None else _DEFAULT_CACHE
        candidate = folder / INCEPTION_WEIGHTS_NAME
        origin = "cache_dir" if cache_dir is not None else "the default cache"
    if candidate.is_file():
        return candidate
    raise FileNotFoundError(
        f"FID Inception weights not found at {candidate} ({origin}). Download them (95.6 MB) "
        f"with\n  curl -L --create-dirs -o {_display(candidate)} {INCEPTION_WEIGHTS_URL}\n"
        f"on a machine with internet access (then copy the file to this one), or point "
        f"${INCEPTION_WEIGHTS_ENV} at a copy."
    )
