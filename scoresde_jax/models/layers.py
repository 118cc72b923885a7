"""Building blocks of the U-Net score networks (NCSN++, DDPM++, DDPM, NCSNv2), NHWC throughout.

The blocks follow the layers of the paper's reference code so that converted weights give the
same numbers: variance-scaling initialisers, convolutions, GroupNorm with torch's statistics,
network-in-network layers, time embeddings, self-attention, FIR resampling (``upfirdn2d``) and
the two residual blocks of NCSN++.

Submodules are created with Flax's automatic names (``Conv_0``, ``GroupNorm_1``, ``Dense_0``,
``NIN_2``, ``Conv2d_0`` ...) in the same order as the original Flax implementation, so a
parameter tree of these blocks has the same paths as the original checkpoints and the same
submodule names as the PyTorch port's ``state_dict``.

Every block takes a compute ``dtype``: parameters stay float32, activations run in ``dtype``
(e.g. ``jnp.bfloat16``); normalisation statistics and softmax are computed in float32.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "AttnBlockpp",
    "Combine",
    "Conv2d",
    "Downsample",
    "GaussianFourierProjection",
    "GroupNorm",
    "NIN",
    "ResnetBlockBigGANpp",
    "ResnetBlockDDPMpp",
    "Upsample",
    "conv1x1",
    "conv3x3",
    "conv_downsample_2d",
    "default_init",
    "dense",
    "downsample_2d",
    "get_act",
    "get_timestep_embedding",
    "naive_downsample_2d",
    "naive_upsample_2d",
    "ncsn_conv1x1",
    "ncsn_conv3x3",
    "setup_fir_kernel",
    "upfirdn2d",
    "upsample_2d",
    "upsample_conv_2d",
]

Initializer = Callable[..., jax.Array]
Dtype = Any

_ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "elu": nn.elu,
    "relu": nn.relu,
    "lrelu": lambda x: nn.leaky_relu(x, negative_slope=0.2),
    "swish": nn.swish,
    "silu": nn.swish,
}


def get_act(name: str) -> Callable[[jax.Array], jax.Array]:
    """The activation called ``name`` in the configs (``config.model.nonlinearity``).

    Args:
      name: one of ``"elu"``, ``"relu"``, ``"lrelu"`` (slope 0.2), ``"swish"`` (= ``"silu"``).
    """
    key = name.lower()
    if key not in _ACTIVATIONS:
        raise ValueError(f"Unknown nonlinearity {name!r}; choose one of {sorted(_ACTIVATIONS)}.")
    return _ACTIVATIONS[key]


# ----------------------------------------------------------------------------------------------
# Initialisers and basic layers.


def default_init(scale: float = 1.0) -> Initializer:
    """DDPM's initialiser: variance scaling, ``fan_avg``, uniform.

    A scale of exactly 0 becomes 1e-10, as in the reference: the layer starts as (almost) zero
    but its weights still carry a direction for the gradient.

    Args:
      scale: variance scale; the weights are ``U(-a, a)`` with ``a = sqrt(3 scale / fan_avg)``.
    """
    scale = 1e-10 if scale == 0 else scale
    return jax.nn.initializers.variance_scaling(scale, "fan_avg", "uniform")


def conv3x3(
    features: int,
    *,
    stride: int = 1,
    bias: bool = True,
    dilation: int = 1,
    init_scale: float = 1.0,
    padding: Any = None,
    dtype: Dtype = jnp.float32,
    name: str | None = None,
) -> nn.Conv:
    """A 3x3 convolution with DDPM initialisation (zero bias), as an ``nn.Conv`` to apply.

    Args:
      features: output channels.
      stride: spatial stride.
      bias: whether to add a bias.
      dilation: kernel dilation.
      init_scale: scale of :func:`default_init` (0 gives an almost-zero layer).
      padding: explicit padding; default keeps the size for stride 1 (``dilation`` on each side).
      dtype: compute dtype.
      name: module name; default is Flax's automatic ``Conv_<n>``.
    """
    if padding is None:
        padding = ((dilation, dilation), (dilation, dilation))
    return nn.Conv(
        features,
        kernel_size=(3, 3),
        strides=(stride, stride),
        padding=padding,
        kernel_dilation=(dilation, dilation),
        use_bias=bias,
        kernel_init=default_init(init_scale),
        bias_init=nn.initializers.zeros,
        dtype=dtype,
        param_dtype=jnp.float32,
        name=name,
    )


def conv1x1(
    features: int,
    *,
    stride: int = 1,
    bias: bool = True,
    init_scale: float = 1.0,
    dtype: Dtype = jnp.float32,
    name: str | None = None,
) -> nn.Conv:
    """A 1x1 convolution with DDPM initialisation (zero bias), as an ``nn.Conv`` to apply."""
    return nn.Conv(
        features,
        kernel_size=(1, 1),
        strides=(stride, stride),
        padding="VALID",
        use_bias=bias,
        kernel_init=default_init(init_scale),
        bias_init=nn.initializers.zeros,
        dtype=dtype,
        param_dtype=jnp.float32,
        name=name,
    )


def _torch_default_conv_init(scale: float, kernel_shape: tuple[int, ...]):
    # PyTorch's default Conv2d init is U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weight and bias,
    # i.e. variance scaling with 1/3 on fan_in; NCSN(v2) multiplies both by init_scale.
    scale = 1e-10 if scale == 0 else scale
    kernel_init = jax.nn.initializers.variance_scaling(scale / 3, "fan_in", "uniform")

    def bias_init(key, shape, dtype=jnp.float32):
        fan_in = math.prod(kernel_shape[:-1])
        bound = scale / math.sqrt(fan_in)
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return kernel_init, bias_init


def _ncsn_conv(
    in_features: int,
    features: int,
    size: int,
    *,
    stride: int,
    bias: bool,
    dilation: int,
    init_scale: float,
    dtype: Dtype,
    name: str | None,
) -> nn.Conv:
    """A ``size`` x ``size`` convolution ("same" padding for odd sizes) with PyTorch's init."""
    kernel_init, bias_init = _torch_default_conv_init(
        init_scale, (size, size, in_features, features)
    )
    pad = dilation * (size - 1) // 2
    return nn.Conv(
        features,
        kernel_size=(size, size),
        strides=(stride, stride),
        padding=((pad, pad), (pad, pad)),
        kernel_dilation=(dilation, dilation),
        use_bias=bias,
        kernel_init=kernel_init,
        bias_init=bias_init,
        dtype=dtype,
        param_dtype=jnp.float32,
        name=name,
    )


def ncsn_conv3x3(
    in_features: int,
    features: int,
    *,
    stride: int = 1,
    bias: bool = True,
    dilation: int = 1,
    init_scale: float = 1.0,
    dtype: Dtype = jnp.float32,
    name: str | None = None,
) -> nn.Conv:
    """A 3x3 convolution with PyTorch's default initialisation, as in NCSNv1/NCSNv2."""
    return _ncsn_conv(
        in_features,
        features,
        3,
        stride=stride,
        bias=bias,
        dilation=dilation,
        init_scale=init_scale,
        dtype=dtype,
        name=name,
    )


def ncsn_conv1x1(
    in_features: int,
    features: int,
    *,
    stride: int = 1,
    bias: bool = True,
    init_scale: float = 1.0,
    dtype: Dtype = jnp.float32,
    name: str | None = None,
) -> nn.Conv:
    """A 1x1 convolution with PyTorch's default initialisation, as in NCSNv1/NCSNv2."""
    return _ncsn_conv(
        in_features,
        features,
        1,
        stride=stride,
        bias=bias,
        dilation=1,
        init_scale=init_scale,
        dtype=dtype,
        name=name,
    )


def dense(
    features: int, *, init_scale: float = 1.0, dtype: Dtype = jnp.float32, name: str | None = None
) -> nn.Dense:
    """A linear layer with DDPM initialisation (zero bias), as an ``nn.Dense`` to apply."""
    return nn.Dense(
        features,
        kernel_init=default_init(init_scale),
        bias_init=nn.initializers.zeros,
        dtype=dtype,
        param_dtype=jnp.float32,
        name=name,
    )


class GroupNorm(nn.Module):
    """Group normalisation over the channel (last) axis, with PyTorch's statistics.

    The variance is computed in two passes (``mean((x - mean)^2)``) in float32, like
    ``torch.nn.GroupNorm``, rather than as ``E[x^2] - E[x]^2``, which loses digits when the mean
    is large compared with the spread.

    Attributes:
      num_groups: number of groups; default ``min(C // 4, 32)`` as in NCSN++.
      epsilon: added to the variance.
      dtype: compute (output) dtype.
    """

    num_groups: int | None = None
    epsilon: float = 1e-6
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = x.shape[-1]
        groups = self.num_groups if self.num_groups is not None else min(c // 4, 32)
        if groups < 1 or c % groups:
            raise ValueError(f"GroupNorm: {c} channels cannot be split into {groups} groups")
        scale = self.param("scale", nn.initializers.ones, (c,), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (c,), jnp.float32)
        xf = x.astype(jnp.float32)
        grouped = xf.reshape(*x.shape[:-1], groups, c // groups)
        axes = tuple(range(1, x.ndim - 1)) + (x.ndim,)
        mean = jnp.mean(grouped, axis=axes, keepdims=True)
        var = jnp.mean(jnp.square(grouped - mean), axis=axes, keepdims=True)
        y = ((grouped - mean) * jax.lax.rsqrt(var + self.epsilon)).reshape(x.shape)
        bshape = (1,) * (x.ndim - 1) + (c,)
        return (y * scale.reshape(bshape) + bias.reshape(bshape)).astype(self.dtype)


class NIN(nn.Module):
    """Network-in-network: a per-pixel linear map of the channels, ``y = x @ W + b``.

    ``W`` has shape ``(in, out)`` (the reference's layout, also in its PyTorch port).

    Attributes:
      num_units: output channels.
      init_scale: scale of :func:`default_init` for ``W``.
      dtype: compute dtype.
    """

    num_units: int
    init_scale: float = 0.1
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        w = self.param(
            "W", default_init(self.init_scale), (x.shape[-1], self.num_units), jnp.float32
        )
        b = self.param("b", nn.initializers.zeros, (self.num_units,), jnp.float32)
        y = jnp.einsum("...c,cd->...d", x.astype(self.dtype), w.astype(self.dtype))
        return y + b.astype(self.dtype).reshape((1,) * (y.ndim - 1) + (-1,))


# ----------------------------------------------------------------------------------------------
# Time / noise-level embeddings.


def get_timestep_embedding(
    timesteps: jax.Array, embedding_dim: int, max_positions: int = 10_000
) -> jax.Array:
    """DDPM's sinusoidal embedding of (fractional) time labels: ``[B] -> [B, embedding_dim]``.

    Frequencies are ``exp(-i log(max_positions) / (half - 1))``, ``i < half = dim // 2``; the
    output is ``[sin(t f), cos(t f)]``, zero-padded when ``embedding_dim`` is odd. Computed in
    float32 with the reference's order of operations.
    """
    if timesteps.ndim != 1:
        raise ValueError(f"timesteps must be 1-D, got shape {timesteps.shape}")
    half = embedding_dim // 2
    step = math.log(max_positions) / (half - 1)
    freqs = jnp.exp(jnp.arange(half, dtype=jnp.float32) * -step)
    args = timesteps.astype(jnp.float32)[:, None] * freqs[None, :]
    emb = jnp.concatenate([jnp.sin(args), jnp.cos(args)], axis=1)
    if embedding_dim % 2:
        emb = jnp.pad(emb, ((0, 0), (0, 1)))
    return emb


class GaussianFourierProjection(nn.Module):
    """Random Fourier features ``[sin(2 pi W x), cos(2 pi W x)]`` of a scalar per example.

    ``W ~ N(0, scale^2)`` is a parameter (so it is saved with the model) that never trains: its
    gradient is stopped, as in the reference where it has ``requires_grad=False``.

    Attributes:
      embedding_size: number of frequencies (the output has twice as many features).
      scale: standard deviation of the frequencies.
    """

    embedding_size: int = 256
    scale: float = 1.0

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        w = self.param(
            "W", nn.initializers.normal(stddev=self.scale), (self.embedding_size,), jnp.float32
        )
        w = jax.lax.stop_gradient(w)
        # Same operation order as the reference, so the (large) arguments round identically.
        proj = x.astype(jnp.float32)[:, None] * w[None, :] * 2 * jnp.pi
        return jnp.concatenate([jnp.sin(proj), jnp.cos(proj)], axis=-1)


# ----------------------------------------------------------------------------------------------
# FIR resampling (StyleGAN2's upfirdn2d), NHWC.


def setup_fir_kernel(k: Sequence[float] | np.ndarray) -> np.ndarray:
    """A normalised 2-D FIR kernel: the outer product of a 1-D ``k`` with itself, summing to 1."""
    k = np.asarray(k, dtype=np.float32)
    if k.ndim == 1:
        k = np.outer(k, k)
    if k.ndim != 2 or k.shape[0] != k.shape[1]:
        raise ValueError(f"FIR kernel must be 1-D or square 2-D, got shape {k.shape}")
    return k / np.sum(k)


def upfirdn2d(
    x: jax.Array,
    kernel: np.ndarray | jax.Array,
    *,
    up: int = 1,
    down: int = 1,
    pad: tuple[int, int] = (0, 0),
) -> jax.Array:
    """Upsample by zero insertion, pad, filter with a 2-D FIR kernel, downsample; ``[N,H,W,C]``.

    For each channel independently: insert ``up - 1`` zeros after every pixel, pad both spatial
    axes by ``pad = (before, after)`` (negative values crop), convolve with ``kernel`` (a true
    convolution: the kernel is flipped) keeping only fully-overlapping positions, then keep every
    ``down``-th pixel. The output size is ``(H * up + before + after - kh) // down + 1``.
    """
    if np.ndim(kernel) != 2:
        raise ValueError(f"upfirdn2d needs a 2-D kernel, got shape {np.shape(kernel)}")
    p0, p1 = pad
    # One lax.pad does the zero insertion (interior padding), the trailing up-1 zeros of the
    # last pixel, and the (possibly negative) border padding.
    cfg = (p0, p1 + up - 1, up - 1)
    x = jax.lax.pad(x, jnp.zeros((), x.dtype), ((0, 0, 0), cfg, cfg, (0, 0, 0)))
    if isinstance(kernel, np.ndarray):
        separable = _separate(kernel[::-1, ::-1])
        if separable is not None:
            return _separable_fir(x, *separable, down)
    kernel = jnp.asarray(kernel, dtype=x.dtype)
    c = x.shape[-1]
    kh, kw = kernel.shape
    w = jnp.broadcast_to(kernel[::-1, ::-1, None, None], (kh, kw, 1, c))
    return jax.lax.conv_general_dilated(
        x,
        w,
        window_strides=(down, down),
        padding="VALID",
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        feature_group_count=c,
    )


def _separate(k: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """``(rows, cols)`` with ``k = outer(rows, cols)`` if the 2-D kernel has rank one, else None."""
    u, s, vt = np.linalg.svd(np.asarray(k, np.float64))
    if s.size > 1 and s[1] > 1e-7 * s[0]:
        return None
    return (u[:, 0] * s[0]).astype(np.float32), vt[0].astype(np.float32)


def _separable_fir(x: jax.Array, rows: np.ndarray, cols: np.ndarray, down: int) -> jax.Array:
    """Correlates ``x`` with ``outer(rows, cols)`` (valid positions, stride ``down``).

    Written as weighted sums of strided slices, one axis at a time: XLA fuses these into plain
    loops, whereas a depthwise convolution (``feature_group_count = C``) takes a slow path on
    CPU. The FIR kernels of NCSN++ are all separable.
    """
    n_h = (x.shape[1] - rows.size) // down + 1
    n_w = (x.shape[2] - cols.size) // down + 1
    dt = x.dtype
    y = sum(
        x[:, a : a + (n_h - 1) * down + 1 : down] * jnp.asarray(r, dt) for a, r in enumerate(rows)
    )
    return sum(
        y[:, :, b : b + (n_w - 1) * down + 1 : down] * jnp.asarray(c, dt)
        for b, c in enumerate(cols)
    )


def upsample_2d(x: jax.Array, k: Sequence[float] | None = None, factor: int = 2, gain: float = 1):
    """Upsamples ``[N,H,W,C]`` by ``factor`` with FIR filter ``k`` (default: nearest neighbour)."""
    k = setup_fir_kernel([1] * factor if k is None else k) * (gain * factor**2)
    p = k.shape[0] - factor
    return upfirdn2d(x, k, up=factor, pad=((p + 1) // 2 + factor - 1, p // 2))


def downsample_2d(x: jax.Array, k: Sequence[float] | None = None, factor: int = 2, gain: float = 1):
    """Downsamples ``[N,H,W,C]`` by ``factor`` with FIR filter ``k`` (default: average pooling)."""
    k = setup_fir_kernel([1] * factor if k is None else k) * gain
    p = k.shape[0] - factor
    return upfirdn2d(x, k, down=factor, pad=((p + 1) // 2, p // 2))


def upsample_conv_2d(
    x: jax.Array,
    w: jax.Array,
    k: Sequence[float] | None = None,
    factor: int = 2,
    gain: float = 1,
) -> jax.Array:
    """Fused ``upsample_2d`` and convolution with ``w`` (HWIO, square, odd size); ``[N,H,W,C]``.

    The transposed convolution of the reference (stride ``factor``, kernel flipped and
    transposed) equals a plain correlation with ``w`` over the zero-inserted input padded by
    ``K - 1``; the FIR filter then smooths the result once.
    """
    kh, kw, _, _ = w.shape
    if kh != kw:
        raise ValueError(f"upsample_conv_2d needs a square kernel, got {w.shape}")
    fir = setup_fir_kernel([1] * factor if k is None else k) * (gain * factor**2)
    p = (fir.shape[0] - factor) - (kw - 1)
    y = jax.lax.conv_general_dilated(
        x,
        w.astype(x.dtype),
        window_strides=(1, 1),
        padding=((kh - 1, kh - 1), (kw - 1, kw - 1)),
        lhs_dilation=(factor, factor),
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
    )
    return upfirdn2d(y, fir, pad=((p + 1) // 2 + factor - 1, p // 2 + 1))


def conv_downsample_2d(
    x: jax.Array,
    w: jax.Array,
    k: Sequence[float] | None = None,
    factor: int = 2,
    gain: float = 1,
) -> jax.Array:
    """Fused FIR filter and strided convolution with ``w`` (HWIO, square); ``[N,H,W,C]``."""
    kh, kw, _, _ = w.shape
    if kh != kw:
        raise ValueError(f"conv_downsample_2d needs a square kernel, got {w.shape}")
    fir = setup_fir_kernel([1] * factor if k is None else k) * gain
    p = (fir.shape[0] - factor) + (kw - 1)
    y = upfirdn2d(x, fir, pad=((p + 1) // 2, p // 2))
    return jax.lax.conv_general_dilated(
        y,
        w.astype(x.dtype),
        window_strides=(factor, factor),
        padding="VALID",
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
    )


def naive_upsample_2d(x: jax.Array, factor: int = 2) -> jax.Array:
    """Nearest-neighbour upsampling of ``[N,H,W,C]`` by an integer factor."""
    n, h, w, c = x.shape
    x = jnp.broadcast_to(x[:, :, None, :, None, :], (n, h, factor, w, factor, c))
    return x.reshape(n, h * factor, w * factor, c)


def naive_downsample_2d(x: jax.Array, factor: int = 2) -> jax.Array:
    """Average pooling of ``[N,H,W,C]`` over non-overlapping ``factor x factor`` windows."""
    n, h, w, c = x.shape
    x = x.reshape(n, h // factor, factor, w // factor, factor, c)
    return jnp.mean(x, axis=(2, 4))


class Conv2d(nn.Module):
    """Convolution with optional fused FIR up- or downsampling by 2 (StyleGAN2).

    Parameters are ``weight`` (HWIO) and ``bias``, the names of the original Flax code.

    Attributes:
      fmaps: output channels.
      kernel: spatial size (odd).
      up: upsample by 2 before the convolution (fused).
      down: downsample by 2 after the convolution (fused).
      resample_kernel: 1-D FIR kernel.
      use_bias: whether to add a bias.
      kernel_init: initialiser of ``weight``; default :func:`default_init`.
      dtype: compute dtype.
    """

    fmaps: int
    kernel: int = 3
    up: bool = False
    down: bool = False
    resample_kernel: tuple[int, ...] = (1, 3, 3, 1)
    use_bias: bool = True
    kernel_init: Initializer | None = None
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        if self.up and self.down:
            raise ValueError("Conv2d cannot both upsample and downsample")
        if self.kernel < 1 or self.kernel % 2 != 1:
            raise ValueError(f"Conv2d kernel size must be odd, got {self.kernel}")
        init = self.kernel_init if self.kernel_init is not None else default_init()
        shape = (self.kernel, self.kernel, x.shape[-1], self.fmaps)
        w = self.param("weight", init, shape, jnp.float32)
        x = x.astype(self.dtype)
        if self.up:
            x = upsample_conv_2d(x, w, k=self.resample_kernel)
        elif self.down:
            x = conv_downsample_2d(x, w, k=self.resample_kernel)
        else:
            pad = self.kernel // 2
            x = jax.lax.conv_general_dilated(
                x,
                w.astype(self.dtype),
                window_strides=(1, 1),
                padding=((pad, pad), (pad, pad)),
                dimension_numbers=("NHWC", "HWIO", "NHWC"),
            )
        if self.use_bias:
            b = self.param("bias", nn.initializers.zeros, (self.fmaps,), jnp.float32)
            x = x + b.astype(self.dtype).reshape(1, 1, 1, -1)
        return x


# ----------------------------------------------------------------------------------------------
# NCSN++ blocks.


class Combine(nn.Module):
    """Merges a skip input ``x`` into ``y`` after a 1x1 convolution: ``cat`` or ``sum``."""

    method: str = "cat"
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, y: jax.Array) -> jax.Array:
        h = conv1x1(y.shape[-1], dtype=self.dtype)(x)
        if self.method == "cat":
            return jnp.concatenate([h, y], axis=-1)
        if self.method == "sum":
            return h + y
        raise ValueError(f"Unknown combine method {self.method!r}; use 'cat' or 'sum'.")


class AttnBlockpp(nn.Module):
    """Self-attention over all pixels (one head) with a residual connection.

    With ``skip_rescale`` the sum is divided by sqrt(2) (NCSN++); without it this is DDPM's block
    (pass ``num_groups=32`` and ``init_scale=0`` for DDPM's exact layer).

    Attributes:
      skip_rescale: divide the residual sum by sqrt(2).
      init_scale: initial scale of the output projection (0: the block starts as the identity).
      num_groups: GroupNorm groups; default ``min(C // 4, 32)``.
      dtype: compute dtype.
    """

    skip_rescale: bool = False
    init_scale: float = 0.0
    num_groups: int | None = None
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        b, height, width, c = x.shape
        h = GroupNorm(num_groups=self.num_groups, dtype=self.dtype)(x)
        q = NIN(c, dtype=self.dtype)(h)
        k = NIN(c, dtype=self.dtype)(h)
        v = NIN(c, dtype=self.dtype)(h)
        logits = jnp.einsum("bhwc,bHWc->bhwHW", q, k) * (c**-0.5)
        logits = logits.reshape(b, height, width, height * width).astype(jnp.float32)
        weights = jax.nn.softmax(logits, axis=-1).astype(self.dtype)
        weights = weights.reshape(b, height, width, height, width)
        h = jnp.einsum("bhwHW,bHWc->bhwc", weights, v)
        h = NIN(c, init_scale=self.init_scale, dtype=self.dtype)(h)
        out = x.astype(self.dtype) + h
        return out / math.sqrt(2.0) if self.skip_rescale else out


class Upsample(nn.Module):
    """2x upsampling: nearest neighbour (+ 3x3 conv) or FIR (optionally fused with a 3x3 conv).

    Attributes:
      out_ch: output channels of the convolution; default: the input channels.
      with_conv: apply a 3x3 convolution.
      fir: use FIR filtering instead of nearest-neighbour repetition.
      fir_kernel: 1-D FIR kernel.
      dtype: compute dtype.
    """

    out_ch: int | None = None
    with_conv: bool = False
    fir: bool = False
    fir_kernel: tuple[int, ...] = (1, 3, 3, 1)
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        out_ch = self.out_ch or x.shape[-1]
        if not self.fir:
            h = naive_upsample_2d(x, 2)
            if self.with_conv:
                h = conv3x3(out_ch, dtype=self.dtype)(h)
        elif not self.with_conv:
            h = upsample_2d(x, self.fir_kernel, factor=2)
        else:
            h = Conv2d(
                out_ch, kernel=3, up=True, resample_kernel=self.fir_kernel, dtype=self.dtype
            )(x)
        return h


class Downsample(nn.Module):
    """2x downsampling: average pooling or a stride-2 3x3 conv, or FIR (optionally fused).

    Attributes:
      out_ch: output channels of the convolution; default: the input channels.
      with_conv: use a (stride-2) 3x3 convolution.
      fir: use FIR filtering.
      fir_kernel: 1-D FIR kernel.
      dtype: compute dtype.
    """

    out_ch: int | None = None
    with_conv: bool = False
    fir: bool = False
    fir_kernel: tuple[int, ...] = (1, 3, 3, 1)
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        out_ch = self.out_ch or x.shape[-1]
        if not self.fir:
            if self.with_conv:
                # "SAME" padding for an even size at stride 2: one extra row/column at the end.
                return conv3x3(out_ch, stride=2, padding=((0, 1), (0, 1)), dtype=self.dtype)(x)
            return naive_downsample_2d(x, 2)
        if not self.with_conv:
            return downsample_2d(x, self.fir_kernel, factor=2)
        return Conv2d(
            out_ch, kernel=3, down=True, resample_kernel=self.fir_kernel, dtype=self.dtype
        )(x)


class ResnetBlockDDPMpp(nn.Module):
    """DDPM's residual block with optional sqrt(2) skip rescaling (NCSN++ ``resblock_type=ddpm``).

    ``GroupNorm -> act -> conv3x3 (+ Dense(act(temb))) -> GroupNorm -> act -> dropout -> conv3x3``,
    plus a shortcut (NIN, or a 3x3 conv with ``conv_shortcut``) when the channels change.

    Attributes:
      act: activation.
      out_ch: output channels; default: the input channels.
      conv_shortcut: use a 3x3 conv instead of NIN for the shortcut.
      dropout: dropout rate (active with ``train=True``; rng ``"dropout"``).
      skip_rescale: divide the residual sum by sqrt(2).
      init_scale: initial scale of the last convolution.
      dtype: compute dtype.
    """

    act: Callable[[jax.Array], jax.Array] = nn.swish
    out_ch: int | None = None
    conv_shortcut: bool = False
    dropout: float = 0.1
    skip_rescale: bool = False
    init_scale: float = 0.0
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(
        self, x: jax.Array, temb: jax.Array | None = None, train: bool = False
    ) -> jax.Array:
        c = x.shape[-1]
        out_ch = self.out_ch or c
        h = self.act(GroupNorm(dtype=self.dtype)(x))
        h = conv3x3(out_ch, dtype=self.dtype)(h)
        if temb is not None:
            h = h + dense(out_ch, dtype=self.dtype)(self.act(temb))[:, None, None, :]
        h = self.act(GroupNorm(dtype=self.dtype)(h))
        h = nn.Dropout(self.dropout)(h, deterministic=not train)
        h = conv3x3(out_ch, init_scale=self.init_scale, dtype=self.dtype)(h)
        x = x.astype(self.dtype)
        if c != out_ch:
            if self.conv_shortcut:
                x = conv3x3(out_ch, dtype=self.dtype)(x)
            else:
                x = NIN(out_ch, dtype=self.dtype)(x)
        out = x + h
        return out / math.sqrt(2.0) if self.skip_rescale else out


class ResnetBlockBigGANpp(nn.Module):
    """BigGAN-style residual block that can resample (NCSN++ ``resblock_type=biggan``).

    Both branches are up/downsampled (FIR or naive) after the first normalisation; the shortcut
    gets a 1x1 conv when the channels change or the block resamples.

    Attributes:
      act: activation.
      up: upsample by 2.
      down: downsample by 2.
      out_ch: output channels; default: the input channels.
      dropout: dropout rate (active with ``train=True``; rng ``"dropout"``).
      fir: FIR resampling (else nearest-neighbour / average pooling).
      fir_kernel: 1-D FIR kernel.
      skip_rescale: divide the residual sum by sqrt(2).
      init_scale: initial scale of the last convolution.
      dtype: compute dtype.
    """

    act: Callable[[jax.Array], jax.Array] = nn.swish
    up: bool = False
    down: bool = False
    out_ch: int | None = None
    dropout: float = 0.1
    fir: bool = False
    fir_kernel: tuple[int, ...] = (1, 3, 3, 1)
    skip_rescale: bool = True
    init_scale: float = 0.0
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(
        self, x: jax.Array, temb: jax.Array | None = None, train: bool = False
    ) -> jax.Array:
        c = x.shape[-1]
        out_ch = self.out_ch or c
        x = x.astype(self.dtype)
        h = self.act(GroupNorm(dtype=self.dtype)(x))
        if self.up:
            if self.fir:
                h = upsample_2d(h, self.fir_kernel, factor=2)
                x = upsample_2d(x, self.fir_kernel, factor=2)
            else:
                h = naive_upsample_2d(h, factor=2)
                x = naive_upsample_2d(x, factor=2)
        elif self.down:
            if self.fir:
                h = downsample_2d(h, self.fir_kernel, factor=2)
                x = downsample_2d(x, self.fir_kernel, factor=2)
            else:
                h = naive_downsample_2d(h, factor=2)
                x = naive_downsample_2d(x, factor=2)
        h = conv3x3(out_ch, dtype=self.dtype)(h)
        if temb is not None:
            h = h + dense(out_ch, dtype=self.dtype)(self.act(temb))[:, None, None, :]
        h = self.act(GroupNorm(dtype=self.dtype)(h))
        h = nn.Dropout(self.dropout)(h, deterministic=not train)
        h = conv3x3(out_ch, init_scale=self.init_scale, dtype=self.dtype)(h)
        if c != out_ch or self.up or self.down:
            x = conv1x1(out_ch, dtype=self.dtype)(x)
        out = x + h
        return out / math.sqrt(2.0) if self.skip_rescale else out
