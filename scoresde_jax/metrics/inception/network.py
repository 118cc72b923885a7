"""The FID Inception-v3 (the ``inception-2015-12-05`` TensorFlow graph of TTUR, TF-GAN and
pytorch-fid) in Flax, on torchvision's ``Inception3`` layout with the graph's quirks: every
convolution is ``BasicConv2d`` (no bias, batch norm eps 0.001, ReLU); the average pools of
``Mixed_5b..7b`` do not count the zero padding (TensorFlow); ``Mixed_7c`` max-pools; 1008 classes.

Inputs as pytorch-fid: NHWC in ``[0, 1]`` (or ``uint8``), resized to 299x299 like
``F.interpolate(mode="bilinear", align_corners=False)``, mapped to ``[-1, 1]``. Every reference
(TF-GAN as used by score_sde, Improved-GAN, torch-fidelity, StyleGAN2-ADA) takes the IS softmax
over all 1008 classes, but Improved-GAN (and the two copying it) omit the ``fc`` bias, which
scores about 0.3 lower on CIFAR-10 (openai/improved-gan#39): ``logits`` is ``pool_3 @ W + b``,
``logits_unbiased`` is ``pool_3 @ W``; say which you use.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from scoresde_jax.core.mesh import batch_sharding, replicated

INCEPTION_SIZE = 299
INCEPTION_NUM_CLASSES = 1008
Precision = Any  # anything jax.lax accepts as a precision
_HIGHEST = jax.lax.Precision.HIGHEST
_BN_EPS = 1e-3
_MIN_SIZE = 75  # smallest input the stem and the stride-2 blocks accept without resizing
_UINT8_TO_UNIT = np.arange(256, dtype=np.float32) / np.float32(255)  # torchvision's ToTensor


def _linear_taps(in_size: int, out_size: int) -> tuple[np.ndarray, ...]:
    """Source indices and weights of ``F.interpolate(mode="bilinear", align_corners=False)``
    along one axis: pixel ``d`` samples ``max(scale (d + 0.5) - 0.5, 0)``, ``scale = in / out``.

    PyTorch's x86-64 kernel rounds that position once (a fused multiply-add; the FID fixture
    agrees bit for bit only then); float64 here is exact before the one rounding to float32.
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
    dims = [d for d in range(x.ndim) if d != axis]
    w0, w1 = (jnp.expand_dims(jnp.asarray(w, x.dtype), dims) for w in (w0, w1))
    return jnp.take(x, i0, axis=axis) * w0 + jnp.take(x, i1, axis=axis) * w1


def resize_bilinear(images: jax.Array, size: tuple[int, int]) -> jax.Array:
    """Bilinear resize of NHWC ``images`` to ``(height, width)`` as PyTorch's ``F.interpolate``
    (``align_corners=False``, no antialiasing), width first: its taps exactly (unlike
    ``jax.image.resize``); PyTorch fuses the multiply-adds, so pixels may differ in the last bit
    (2.4e-7 on the FID fixture's 32 -> 299 resize)."""
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
    """NHWC images -> the float32 network input: ``uint8`` / 255 (else taken as ``[0, 1]``),
    resized to 299x299 (unless already that size) and mapped to ``[-1, 1]`` by ``2x - 1``."""
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


def _avg_pool_3x3(x: jax.Array) -> jax.Array:
    # TensorFlow's average pool divides by the number of pixels inside the image, not 9.
    return nn.avg_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)), count_include_pad=False)


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
    """``Mixed_7b`` (``pool="avg"``, padding not counted) and ``Mixed_7c`` (``pool="max"``, a quirk
    of the FID graph kept because the weights were trained with it; the published Inception-v3
    averages); every 3x3 is split into parallel 1x3 and 3x1 halves, concatenated."""

    pool: str = "avg"
    precision: Precision = _HIGHEST

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        conv = functools.partial(BasicConv2d, precision=self.precision)

        def split(h, name):
            a = conv(384, (1, 3), padding=(0, 1), name=f"{name}a")(h)
            return jnp.concatenate([a, conv(384, (3, 1), padding=(1, 0), name=f"{name}b")(h)], -1)

        b1 = conv(320, (1, 1), name="branch1x1")(x)
        b3 = split(conv(384, (1, 1), name="branch3x3_1")(x), "branch3x3_2")
        bd = conv(448, (1, 1), name="branch3x3dbl_1")(x)
        bd = split(conv(384, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(bd), "branch3x3dbl_3")
        if self.pool == "avg":
            pooled = _avg_pool_3x3(x)
        else:
            pooled = nn.max_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)))
        bp = conv(192, (1, 1), name="branch_pool")(pooled)
        return jnp.concatenate([b1, b3, bd, bp], axis=-1)


class _Classifier(nn.Module):
    """The ``fc`` layer: ``(x @ kernel + bias, x @ kernel)``."""

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
    """``images [B, H, W, 3]`` in ``[0, 1]`` -> ``pool_3 [B, 2048]``, ``logits`` and
    ``logits_unbiased [B, 1008]`` (variables: :func:`load_inception_params`).

    ``resize_input=False`` takes any size from 75x75 as it is; ``normalize_input=False`` takes
    images already in ``[-1, 1]``; ``precision`` (convolutions and ``fc``): ``HIGHEST`` keeps
    float32 on GPUs/TPUs, whose TF32/bf16 default moves the features far beyond FID's tolerance.
    ``mutable=["intermediates"]`` sows pytorch-fid's four blocks ``block0`` (first max pool, 64
    channels), ``block1`` (second, 192), ``block2`` (``Mixed_6e``, 768), ``block3`` (2048).
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
        for c, pool_features in zip("bcd", (32, 64, 64), strict=True):
            x = InceptionA(pool_features, precision=p, name=f"Mixed_5{c}")(x)
        x = InceptionB(precision=p, name="Mixed_6a")(x)
        for c, channels_7x7 in zip("bcde", (128, 160, 160, 192), strict=True):
            x = InceptionC(channels_7x7, precision=p, name=f"Mixed_6{c}")(x)
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
    """A compiled ``images [B, H, W, 3] -> (pool_3 [B, 2048], logits [B, 1008])`` (float32; images
    in ``[0, 1]`` or ``uint8``), ``logits_unbiased`` with ``unbiased_logits``.

    With a ``mesh`` the (global, the same on every process) batch is split over its ``data`` axis,
    zero-padded to a multiple of it; ``module_kwargs`` are :class:`FIDInceptionV3` attributes.
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
            xp = jnp if isinstance(images, jax.Array) else np
            images = xp.pad(xp.asarray(images), [(0, pad)] + [(0, 0)] * (images.ndim - 1))
        pool_3, logits = jitted(variables, jax.device_put(images, data))
        if pad:
            pool_3, logits = pool_3[:n], logits[:n]
        return pool_3, logits

    return run
