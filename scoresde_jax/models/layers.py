"""Building blocks of the U-Net score networks (NCSN++, DDPM++, DDPM, NCSNv2), NHWC throughout.

Numerics and Flax's automatic submodule names (``Conv_0``, ``GroupNorm_1``, ``NIN_2`` ...), in
creation order, follow the paper's Flax code, so its checkpoints and the PyTorch port's convert.
Parameters are float32; activations use ``dtype``, normalisation statistics and softmax float32.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

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
    """The activation ``config.model.nonlinearity``: elu, relu, lrelu (slope 0.2), swish = silu."""
    key = name.lower()
    if key not in _ACTIVATIONS:
        raise ValueError(f"Unknown nonlinearity {name!r}; choose one of {sorted(_ACTIVATIONS)}.")
    return _ACTIVATIONS[key]


def default_init(scale: float = 1.0) -> Initializer:
    """DDPM's initialiser ``U(-a, a)``, ``a = sqrt(3 scale / fan_avg)``; a scale of 0 becomes
    1e-10 as in the reference, so the weights still carry a direction for the gradient."""
    scale = 1e-10 if scale == 0 else scale
    return jax.nn.initializers.variance_scaling(scale, "fan_avg", "uniform")


def _conv(features, size, init, *, stride=1, dilation=1, padding=None, bias=True, dtype, name):
    """A square convolution; the default padding keeps the size at stride 1."""
    pad = dilation * (size - 1) // 2
    return nn.Conv(
        features,
        kernel_size=(size, size),
        strides=(stride, stride),
        padding=((pad, pad), (pad, pad)) if padding is None else padding,
        kernel_dilation=(dilation, dilation),
        use_bias=bias,
        kernel_init=init[0],
        bias_init=init[1],
        dtype=dtype,
        param_dtype=jnp.float32,
        name=name,
    )


def conv3x3(
    features: int,
    *,
    stride: int = 1,
    init_scale: float = 1.0,
    padding: Any = None,
    dtype: Dtype = jnp.float32,
    name: str | None = None,
) -> nn.Conv:
    """A 3x3 convolution with DDPM initialisation (:func:`default_init`, zero bias)."""
    init = (default_init(init_scale), nn.initializers.zeros)
    return _conv(features, 3, init, stride=stride, padding=padding, dtype=dtype, name=name)


def conv1x1(features: int, *, dtype: Dtype = jnp.float32) -> nn.Conv:
    """A 1x1 convolution with DDPM initialisation (zero bias)."""
    return _conv(features, 1, (default_init(), nn.initializers.zeros), dtype=dtype, name=None)


def _torch_default_conv_init(fan_in: int) -> tuple[Initializer, Initializer]:
    # PyTorch's default Conv2d init: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weight and bias.
    def bias_init(key, shape, dtype=jnp.float32):
        bound = 1.0 / math.sqrt(fan_in)
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return jax.nn.initializers.variance_scaling(1.0 / 3, "fan_in", "uniform"), bias_init


def ncsn_conv3x3(
    in_features: int,
    features: int,
    *,
    bias: bool = True,
    dilation: int = 1,
    dtype: Dtype = jnp.float32,
    name: str | None = None,
) -> nn.Conv:
    """A 3x3 convolution with PyTorch's default initialisation, as in NCSNv1/NCSNv2."""
    init = _torch_default_conv_init(9 * in_features)
    return _conv(features, 3, init, dilation=dilation, bias=bias, dtype=dtype, name=name)


def ncsn_conv1x1(
    in_features: int, features: int, *, dtype: Dtype = jnp.float32, name: str | None = None
) -> nn.Conv:
    """A 1x1 convolution with PyTorch's default initialisation, as in NCSNv1/NCSNv2."""
    return _conv(features, 1, _torch_default_conv_init(in_features), dtype=dtype, name=name)


def dense(
    features: int, *, init_scale: float = 1.0, dtype: Dtype = jnp.float32, name: str | None = None
) -> nn.Dense:
    """A linear layer with DDPM initialisation (zero bias)."""
    return nn.Dense(
        features,
        kernel_init=default_init(init_scale),
        bias_init=nn.initializers.zeros,
        dtype=dtype,
        param_dtype=jnp.float32,
        name=name,
    )


class GroupNorm(nn.Module):
    """Group normalisation of the last axis, ``num_groups`` by default ``min(C // 4, 32)``
    (NCSN++); the variance in two float32 passes like ``torch.nn.GroupNorm`` (``E[x^2] - E[x]^2``
    loses digits when the mean is large against the spread).

    Both passes reduce the spatial axes per channel first and only then sum the channels of a
    group on the small ``[B, C]`` result: XLA:CPU reduces a channel axis split into
    ``(groups, C // groups)`` about ten times slower than torch, which made GroupNorm a tenth of
    an NCSN++ forward pass."""

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
        spatial = tuple(range(1, x.ndim - 1))
        count = math.prod(x.shape[1:-1]) * (c // groups)
        per_channel = (x.shape[0],) + (1,) * len(spatial) + (c,)

        def group_mean(channel_sums: jax.Array) -> jax.Array:  # [B, C] -> [B, C]
            sums = channel_sums.reshape(-1, groups, c // groups).sum(-1, keepdims=True)
            return jnp.broadcast_to(sums / count, (x.shape[0], groups, c // groups)).reshape(
                per_channel
            )

        centred = xf - group_mean(jnp.sum(xf, axis=spatial))
        var = group_mean(jnp.sum(jnp.square(centred), axis=spatial))
        bshape = (1,) * (x.ndim - 1) + (c,)
        y = centred * (jax.lax.rsqrt(var + self.epsilon) * scale.reshape(bshape))
        return (y + bias.reshape(bshape)).astype(self.dtype)


class NIN(nn.Module):
    """Network-in-network: a per-pixel ``y = x @ W + b``, ``W: (in, out)`` as in the reference."""

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


def get_timestep_embedding(
    timesteps: jax.Array, embedding_dim: int, max_positions: int = 10_000
) -> jax.Array:
    """DDPM's sinusoidal embedding ``[sin(t f), cos(t f)]`` (zero-padded to an odd size) of time
    labels ``[B] -> [B, embedding_dim]``, ``f_i = exp(-i log(max_positions) / (dim // 2 - 1))``."""
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
    """Random Fourier features ``[sin(2 pi W x), cos(2 pi W x)]`` of a scalar per example;
    ``W ~ N(0, scale^2)`` is a saved parameter, its gradient stopped (``requires_grad=False``)."""

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


def setup_fir_kernel(k: Sequence[float] | np.ndarray) -> np.ndarray:
    """A normalised 2-D FIR kernel: the outer product of a 1-D ``k`` with itself, summing to 1."""
    k = np.asarray(k, dtype=np.float32)
    if k.ndim == 1:
        k = np.outer(k, k)
    if k.ndim != 2 or k.shape[0] != k.shape[1]:
        raise ValueError(f"FIR kernel must be 1-D or square 2-D, got shape {k.shape}")
    return k / np.sum(k)


def _fir(k: Sequence[float] | None, factor: int, gain: float) -> np.ndarray:
    """The FIR kernel ``k`` (default: ``factor`` ones, i.e. nearest / box) times ``gain``."""
    return setup_fir_kernel([1] * factor if k is None else k) * gain


def upfirdn2d(
    x: jax.Array,
    kernel: np.ndarray | jax.Array,
    *,
    up: int = 1,
    down: int = 1,
    pad: tuple[int, int] = (0, 0),
) -> jax.Array:
    """Per channel of ``[N,H,W,C]``: insert ``up - 1`` zeros after each pixel, pad by ``pad``
    (negative crops), convolve (flipped kernel, valid positions), keep every ``down``-th pixel:
    size ``(H * up + before + after - kh) // down + 1``."""
    if np.ndim(kernel) != 2:
        raise ValueError(f"upfirdn2d needs a 2-D kernel, got shape {np.shape(kernel)}")
    p0, p1 = pad
    # One lax.pad inserts the zeros (interior), the last pixel's trailing ones and the border.
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
    return _conv2d(x, w, down, "VALID", feature_group_count=c)


def _conv2d(x, w, stride, padding, **kwargs) -> jax.Array:
    return jax.lax.conv_general_dilated(
        x,
        w,
        window_strides=(stride, stride),
        padding=padding,
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        **kwargs,
    )


def _separate(k: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """``(rows, cols)`` with ``k = outer(rows, cols)`` if the 2-D kernel has rank one, else None."""
    u, s, vt = np.linalg.svd(np.asarray(k, np.float64))
    if s.size > 1 and s[1] > 1e-7 * s[0]:
        return None
    return (u[:, 0] * s[0]).astype(np.float32), vt[0].astype(np.float32)


def _separable_fir(x: jax.Array, rows: np.ndarray, cols: np.ndarray, down: int) -> jax.Array:
    """Correlates ``x`` with ``outer(rows, cols)`` (valid positions, stride ``down``) as sums of
    strided slices, which XLA fuses; a depthwise convolution takes a slow path on CPU."""
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
    k = _fir(k, factor, gain * factor**2)
    p = k.shape[0] - factor
    return upfirdn2d(x, k, up=factor, pad=((p + 1) // 2 + factor - 1, p // 2))


def downsample_2d(x: jax.Array, k: Sequence[float] | None = None, factor: int = 2, gain: float = 1):
    """Downsamples ``[N,H,W,C]`` by ``factor`` with FIR filter ``k`` (default: average pooling)."""
    k = _fir(k, factor, gain)
    p = k.shape[0] - factor
    return upfirdn2d(x, k, down=factor, pad=((p + 1) // 2, p // 2))


def _square_kernel(w: jax.Array, caller: str) -> int:
    kh, kw, _, _ = w.shape
    if kh != kw:
        raise ValueError(f"{caller} needs a square kernel, got {w.shape}")
    return kh


def upsample_conv_2d(
    x: jax.Array, w: jax.Array, k: Sequence[float] | None = None, factor: int = 2, gain: float = 1
) -> jax.Array:
    """Fused ``upsample_2d`` and convolution with ``w`` (HWIO, square, odd size); the reference's
    transposed convolution is a correlation with ``w`` over the zero-inserted input padded by
    ``K - 1``, then the FIR filter."""
    kw = _square_kernel(w, "upsample_conv_2d")
    fir = _fir(k, factor, gain * factor**2)
    p = (fir.shape[0] - factor) - (kw - 1)
    pad = ((kw - 1, kw - 1), (kw - 1, kw - 1))
    y = _conv2d(x, w.astype(x.dtype), 1, pad, lhs_dilation=(factor, factor))
    return upfirdn2d(y, fir, pad=((p + 1) // 2 + factor - 1, p // 2 + 1))


def conv_downsample_2d(
    x: jax.Array, w: jax.Array, k: Sequence[float] | None = None, factor: int = 2, gain: float = 1
) -> jax.Array:
    """Fused FIR filter and strided convolution with ``w`` (HWIO, square); ``[N,H,W,C]``."""
    kw = _square_kernel(w, "conv_downsample_2d")
    fir = _fir(k, factor, gain)
    p = (fir.shape[0] - factor) + (kw - 1)
    y = upfirdn2d(x, fir, pad=((p + 1) // 2, p // 2))
    return _conv2d(y, w.astype(x.dtype), factor, "VALID")


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
    """Convolution (odd ``kernel``; ``weight`` HWIO and ``bias`` as in the original Flax code) with
    optional fused FIR up- or downsampling by 2 (StyleGAN2)."""

    fmaps: int
    kernel: int = 3
    up: bool = False
    down: bool = False
    resample_kernel: tuple[int, ...] = (1, 3, 3, 1)
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        if self.up and self.down:
            raise ValueError("Conv2d cannot both upsample and downsample")
        if self.kernel < 1 or self.kernel % 2 != 1:
            raise ValueError(f"Conv2d kernel size must be odd, got {self.kernel}")
        shape = (self.kernel, self.kernel, x.shape[-1], self.fmaps)
        w = self.param("weight", default_init(), shape, jnp.float32)
        x = x.astype(self.dtype)
        if self.up:
            x = upsample_conv_2d(x, w, k=self.resample_kernel)
        elif self.down:
            x = conv_downsample_2d(x, w, k=self.resample_kernel)
        else:
            pad = self.kernel // 2
            x = _conv2d(x, w.astype(self.dtype), 1, ((pad, pad), (pad, pad)))
        b = self.param("bias", nn.initializers.zeros, (self.fmaps,), jnp.float32)
        return x + b.astype(self.dtype).reshape(1, 1, 1, -1)


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


def _skip_sum(x: jax.Array, h: jax.Array, skip_rescale: bool) -> jax.Array:
    return (x + h) / math.sqrt(2.0) if skip_rescale else x + h


class AttnBlockpp(nn.Module):
    """One-head self-attention over all pixels plus the input (divided by sqrt(2) with
    ``skip_rescale``, NCSN++)."""

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
        return _skip_sum(x.astype(self.dtype), h, self.skip_rescale)


class _Resample(nn.Module):
    out_ch: int | None = None  # width of the convolution; default: the input channels
    with_conv: bool = False
    fir: bool = False
    fir_kernel: tuple[int, ...] = (1, 3, 3, 1)
    dtype: Dtype = jnp.float32


class Upsample(_Resample):
    """2x upsampling: nearest neighbour (+ 3x3 conv) or FIR (optionally fused with a 3x3 conv)."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        out_ch = self.out_ch or x.shape[-1]
        if not self.fir:
            h = naive_upsample_2d(x, 2)
            return conv3x3(out_ch, dtype=self.dtype)(h) if self.with_conv else h
        if not self.with_conv:
            return upsample_2d(x, self.fir_kernel, factor=2)
        return Conv2d(out_ch, up=True, resample_kernel=self.fir_kernel, dtype=self.dtype)(x)


class Downsample(_Resample):
    """2x downsampling: average pooling or a stride-2 3x3 conv, or FIR (optionally fused)."""

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
        return Conv2d(out_ch, down=True, resample_kernel=self.fir_kernel, dtype=self.dtype)(x)


class _ResnetBlock(nn.Module):
    act: Callable[[jax.Array], jax.Array] = nn.swish
    out_ch: int | None = None
    dropout: float = 0.1
    skip_rescale: bool = False
    init_scale: float = 0.0
    dtype: Dtype = jnp.float32


class ResnetBlockDDPMpp(_ResnetBlock):
    """DDPM's residual block (NCSN++ ``resblock_type=ddpm``): ``GroupNorm, act`` then
    :func:`_resnet_convs`, plus a NIN (``conv_shortcut``: 3x3 conv) shortcut on a width change."""

    conv_shortcut: bool = False
    num_groups: int | None = None

    @nn.compact
    def __call__(self, x: jax.Array, temb: jax.Array | None = None, train: bool = False):
        c = x.shape[-1]
        out_ch = self.out_ch or c
        h = self.act(GroupNorm(self.num_groups, dtype=self.dtype)(x))
        h = _resnet_convs(self, h, temb, train, out_ch, self.num_groups)
        x = x.astype(self.dtype)
        if c != out_ch:
            if self.conv_shortcut:
                x = conv3x3(out_ch, dtype=self.dtype)(x)
            else:
                x = NIN(out_ch, dtype=self.dtype)(x)
        return _skip_sum(x, h, self.skip_rescale)


def _resnet_convs(block: nn.Module, h, temb, train: bool, out_ch: int, num_groups=None):
    """``conv3x3 (+ Dense(act(temb))) -> GroupNorm -> act -> dropout -> conv3x3`` (``init_scale``);
    dropout is active with ``train`` (rng ``"dropout"``)."""
    h = conv3x3(out_ch, dtype=block.dtype)(h)
    if temb is not None:
        h = h + dense(out_ch, dtype=block.dtype)(block.act(temb))[:, None, None, :]
    h = block.act(GroupNorm(num_groups, dtype=block.dtype)(h))
    h = nn.Dropout(block.dropout)(h, deterministic=not train)
    return conv3x3(out_ch, init_scale=block.init_scale, dtype=block.dtype)(h)


class ResnetBlockBigGANpp(_ResnetBlock):
    """BigGAN residual block (NCSN++ ``resblock_type=biggan``): both branches are resampled (FIR
    or naive) after the first norm; a 1x1 conv shortcut if the width changes or it resamples."""

    up: bool = False
    down: bool = False
    fir: bool = False
    fir_kernel: tuple[int, ...] = (1, 3, 3, 1)
    skip_rescale: bool = True

    @nn.compact
    def __call__(self, x: jax.Array, temb: jax.Array | None = None, train: bool = False):
        c = x.shape[-1]
        out_ch = self.out_ch or c
        x = x.astype(self.dtype)
        h = self.act(GroupNorm(dtype=self.dtype)(x))
        if self.fir and (self.up or self.down):
            fir = upsample_2d if self.up else downsample_2d
            h, x = fir(h, self.fir_kernel, factor=2), fir(x, self.fir_kernel, factor=2)
        elif self.up or self.down:
            naive = naive_upsample_2d if self.up else naive_downsample_2d
            h, x = naive(h, factor=2), naive(x, factor=2)
        h = _resnet_convs(self, h, temb, train, out_ch)
        if c != out_ch or self.up or self.down:
            x = conv1x1(out_ch, dtype=self.dtype)(x)
        return _skip_sum(x, h, self.skip_rescale)
