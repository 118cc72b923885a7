"""NCSN (Song & Ermon, 2019) and NCSNv2 (Song & Ermon, 2020): RefineNets for SMLD / VE models.

:class:`NCSNv2` divides its output by ``sigmas[labels]`` (it learns ``sigma * score``);
:class:`NCSN` conditions every norm on the noise index. Labels index the descending noise levels
(floats are rounded). Parameter paths are the PyTorch reference's with list entries ``<list>_<i>``
(``res2_0/conv2/conv/kernel`` is ``res2.0.conv2.conv.weight``), so conversion is renaming alone.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from scoresde_jax.io.state_dict import convert_state_dict
from scoresde_jax.models import _torch_import
from scoresde_jax.models.ddpm import ImageScoreNet, noise_index
from scoresde_jax.models.layers import Dtype, get_act, ncsn_conv1x1, ncsn_conv3x3

Act = Callable[[jax.Array], jax.Array]

_EPS = 1e-5  # torch.nn.InstanceNorm2d's default, also used for the channel-mean statistics


def _instance_norm_plus(x: jax.Array, gamma, alpha, beta, dtype: Dtype) -> jax.Array:
    """``gamma * (IN(x) + alpha * standardised_mean) + beta`` in float32: "++" adds back the
    channel means that instance norm removes (which shifts colours), standardised across channels
    (unbiased variance, as ``torch.var``)."""
    xf = x.astype(jnp.float32)
    means = jnp.mean(xf, axis=(1, 2))  # [B, C]
    m = jnp.mean(means, axis=-1, keepdims=True)
    v = jnp.var(means, axis=-1, keepdims=True, ddof=1)
    means = (means - m) / jnp.sqrt(v + _EPS)
    mu = jnp.mean(xf, axis=(1, 2), keepdims=True)
    var = jnp.mean(jnp.square(xf - mu), axis=(1, 2), keepdims=True)
    h = (xf - mu) / jnp.sqrt(var + _EPS) + means[:, None, None, :] * alpha
    return (gamma * h + beta).astype(dtype)


def _normal_one(key, shape, dtype=jnp.float32):  # N(1, 0.02^2), as in the reference
    return 1.0 + 0.02 * jax.random.normal(key, shape, dtype)


class InstanceNorm2dPlus(nn.Module):
    """Instance norm "++" (:func:`_instance_norm_plus`), called as ``norm(x, y)``, ``y`` ignored."""

    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, y: jax.Array | None = None) -> jax.Array:
        del y
        c = x.shape[-1]
        alpha = self.param("alpha", _normal_one, (c,), jnp.float32)
        gamma = self.param("gamma", _normal_one, (c,), jnp.float32)
        beta = self.param("beta", nn.initializers.zeros, (c,), jnp.float32)
        alpha, gamma, beta = (p.reshape(1, 1, 1, c) for p in (alpha, gamma, beta))
        return _instance_norm_plus(x, gamma, alpha, beta, self.dtype)


class ConditionalInstanceNorm2dPlus(nn.Module):
    """Instance norm "++" with ``[gamma | alpha | beta]`` the embedding row of noise index ``y``."""

    num_classes: int
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, y: jax.Array) -> jax.Array:
        c = x.shape[-1]

        def init(key, shape, dtype=jnp.float32):
            scales = _normal_one(key, (shape[0], 2 * c), dtype)
            return jnp.concatenate([scales, jnp.zeros((shape[0], c), dtype)], axis=1)

        table = nn.Embed(
            self.num_classes, 3 * c, embedding_init=init, param_dtype=jnp.float32, name="embed"
        )(y)
        gamma, alpha, beta = (t[:, None, None, :] for t in jnp.split(table, 3, axis=-1))
        return _instance_norm_plus(x, gamma, alpha, beta, self.dtype)


def _norm(num_classes: int | None, dtype: Dtype, name: str) -> nn.Module:
    """NCSNv2's norm (``num_classes=None``; blocks pass the label, it is ignored) or NCSNv1's."""
    if num_classes is None:
        return InstanceNorm2dPlus(dtype=dtype, name=name)
    return ConditionalInstanceNorm2dPlus(num_classes, dtype=dtype, name=name)


def _resize_axis_align_corners(x: jax.Array, axis: int, size: int) -> jax.Array:
    n = x.shape[axis]
    if n == size:
        return x
    if size == 1 or n == 1:
        return jnp.take(x, jnp.zeros((size,), jnp.int32), axis=axis)
    # align_corners=True: the first and last samples of input and output coincide.
    pos = jnp.arange(size, dtype=jnp.float32) * np.float32((n - 1) / (size - 1))
    lo = jnp.clip(jnp.floor(pos).astype(jnp.int32), 0, n - 1)
    hi = jnp.minimum(lo + 1, n - 1)
    frac = (pos - lo.astype(jnp.float32)).astype(x.dtype)
    frac = jnp.expand_dims(frac, [d for d in range(x.ndim) if d != axis])
    return jnp.take(x, lo, axis=axis) * (1 - frac) + jnp.take(x, hi, axis=axis) * frac


def resize(x: jax.Array, shape: Sequence[int], method: str = "bilinear") -> jax.Array:
    """Resizes ``[B, H, W, C]`` to ``shape = (H', W')`` as the PyTorch reference:
    ``"bilinear"`` (``F.interpolate``'s ``align_corners=True``) or ``"nearest_neighbor"``."""
    if method == "bilinear":
        return _resize_axis_align_corners(_resize_axis_align_corners(x, 1, shape[0]), 2, shape[1])
    if method == "nearest_neighbor":
        return jax.image.resize(x, (x.shape[0], *shape, x.shape[-1]), "nearest")
    raise ValueError(f"Unknown interpolation {method!r}; use 'bilinear' or 'nearest_neighbor'.")


class ConvMeanPool(nn.Module):
    """A size-preserving convolution, then the mean of every 2x2 block (even sizes)."""

    features: int
    kernel_size: int = 3
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        make = ncsn_conv3x3 if self.kernel_size == 3 else ncsn_conv1x1
        h = make(x.shape[-1], self.features, dtype=self.dtype, name="conv")(x)
        return (h[:, ::2, ::2] + h[:, 1::2, ::2] + h[:, ::2, 1::2] + h[:, 1::2, 1::2]) / 4.0


class ResidualBlock(nn.Module):
    """Pre-activation residual block (``norm -> act -> conv`` twice); ``resample="down"`` halves
    the resolution (mean pooling) unless ``dilation > 1``, RefineNet's way to grow the field."""

    output_dim: int
    resample: str | None = None
    dilation: int = 1
    act: Act = nn.elu
    num_classes: int | None = None
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, y: jax.Array | None = None) -> jax.Array:
        c, out, d, dt = x.shape[-1], self.output_dim, self.dilation, self.dtype
        down = self.resample == "down"
        mid = c if down else out
        pool = down and d == 1
        h = self.act(_norm(self.num_classes, dt, "normalize1")(x, y))
        h = ncsn_conv3x3(c, mid, dilation=d, dtype=dt, name="conv1")(h)
        h = self.act(_norm(self.num_classes, dt, "normalize2")(h, y))
        if pool:
            h = ConvMeanPool(out, dtype=dt, name="conv2")(h)
        else:
            h = ncsn_conv3x3(mid, out, dilation=d, dtype=dt, name="conv2")(h)
        shortcut = x.astype(dt)
        if pool:
            shortcut = ConvMeanPool(out, kernel_size=1, dtype=dt, name="shortcut")(x)
        elif d > 1 and (down or out != c):
            shortcut = ncsn_conv3x3(c, out, dilation=d, dtype=dt, name="shortcut")(x)
        elif out != c:
            shortcut = ncsn_conv1x1(c, out, dtype=dt, name="shortcut")(x)
        return shortcut + h


class RCUBlock(nn.Module):
    """Residual conv units: ``n_blocks`` residual stacks of ``n_stages`` (norm ->) act -> conv."""

    n_blocks: int
    n_stages: int
    act: Act = nn.relu
    num_classes: int | None = None
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, y: jax.Array | None = None) -> jax.Array:
        c = x.shape[-1]
        for i in range(1, self.n_blocks + 1):
            residual = x
            for j in range(1, self.n_stages + 1):
                if self.num_classes is not None:
                    x = _norm(self.num_classes, self.dtype, f"{i}_{j}_norm")(x, y)
                x = self.act(x)
                x = ncsn_conv3x3(c, c, bias=False, dtype=self.dtype, name=f"{i}_{j}_conv")(x)
            x = x + residual
        return x


class CRPBlock(nn.Module):
    """Chained residual pooling: repeated 5x5 pool + conv, each added to the input (NCSNv2
    max-pools; the conditional NCSNv1 normalises and average-pools)."""

    features: int
    n_stages: int
    act: Act = nn.relu
    num_classes: int | None = None
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, y: jax.Array | None = None) -> jax.Array:
        x = self.act(x)
        path = x
        pad = ((2, 2), (2, 2))
        for i in range(self.n_stages):
            if self.num_classes is None:
                path = nn.max_pool(path, (5, 5), strides=(1, 1), padding=pad)
            else:
                path = _norm(self.num_classes, self.dtype, f"norms_{i}")(path, y)
                # Zero padding counted in the mean, as torch's AvgPool2d default.
                path = nn.avg_pool(path, (5, 5), strides=(1, 1), padding=pad)
            path = ncsn_conv3x3(
                self.features, self.features, bias=False, dtype=self.dtype, name=f"convs_{i}"
            )(path)
            x = path + x
        return x


class MSFBlock(nn.Module):
    """Multi-resolution fusion: conv every input, resize to ``shape``, and sum."""

    features: int
    interpolation: str = "bilinear"
    num_classes: int | None = None
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(
        self, xs: Sequence[jax.Array], shape: Sequence[int], y: jax.Array | None = None
    ) -> jax.Array:
        total = None
        for i, h in enumerate(xs):
            if self.num_classes is not None:
                h = _norm(self.num_classes, self.dtype, f"norms_{i}")(h, y)
            h = ncsn_conv3x3(h.shape[-1], self.features, dtype=self.dtype, name=f"convs_{i}")(h)
            h = resize(h, shape, self.interpolation)
            total = h if total is None else total + h
        return total


class RefineBlock(nn.Module):
    """RefineNet block: adapt each input (2 RCUs), fuse (MSF; not at the ``start``, which has one
    input), pool (CRP), output RCUs (three at the ``end``, else one)."""

    features: int
    act: Act = nn.relu
    start: bool = False
    end: bool = False
    interpolation: str = "bilinear"
    num_classes: int | None = None
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(
        self, xs: Sequence[jax.Array], shape: Sequence[int], y: jax.Array | None = None
    ) -> jax.Array:
        norm = dict(num_classes=self.num_classes, dtype=self.dtype)
        kw = dict(act=self.act, **norm)
        hs = [RCUBlock(2, 2, name=f"adapt_convs_{i}", **kw)(x, y) for i, x in enumerate(xs)]
        if self.start:
            (h,) = hs
        else:
            h = MSFBlock(self.features, self.interpolation, name="msf", **norm)(hs, shape, y)
        h = CRPBlock(self.features, 2, name="crp", **kw)(h, y)
        return RCUBlock(3 if self.end else 1, 2, name="output_convs", **kw)(h, y)


# Backbone stages, shallow to deep: (name, width multiplier, downsamples, dilation, name and width
# multiplier of the RefineBlock reading it). A stage is two residual blocks, the first resampling.
_Stage = tuple[str, int, bool, int, str, int]
_128: tuple[_Stage, ...] = (
    ("res1", 1, False, 1, "refine5", 1),
    ("res2", 2, True, 1, "refine4", 1),
    ("res3", 2, True, 1, "refine3", 2),
    ("res4", 4, True, 2, "refine2", 2),
    ("res5", 4, True, 4, "refine1", 4),
)
ARCHITECTURES: dict[str, tuple[_Stage, ...]] = {
    "ncsnv2_64": (
        ("res1", 1, False, 1, "refine4", 1),
        ("res2", 2, True, 1, "refine3", 1),
        ("res3", 2, True, 2, "refine2", 2),
        ("res4", 2, True, 4, "refine1", 2),
    ),
    "ncsnv2_128": _128,
    "ncsnv2_256": (*_128[:3], ("res31", 2, True, 1, "refine31", 2), *_128[3:]),
}


def _refinenet(module: nn.Module, x, y, stages, num_classes):
    """Begin conv, backbone, RefineBlock cascade, norm, act, end conv."""
    act = get_act(module.nonlinearity)
    nf, dt = module.nf, module.dtype
    h = x if module.centered else 2 * x - 1.0
    h = ncsn_conv3x3(x.shape[-1], nf, dtype=dt, name="begin_conv")(h)
    norm = dict(num_classes=num_classes, dtype=dt)
    layers = []
    for stage, mult, down, dilation, _, _ in stages:
        kw = dict(dilation=dilation, act=act, **norm)
        first = "down" if down else None
        h = ResidualBlock(mult * nf, resample=first, name=f"{stage}_0", **kw)(h, y)
        h = ResidualBlock(mult * nf, name=f"{stage}_1", **kw)(h, y)
        layers.append(h)
    ref = None
    for depth in reversed(range(len(stages))):
        _, _, _, _, name, mult = stages[depth]
        layer = layers[depth]
        inputs = [layer] if ref is None else [layer, ref]
        kw = dict(start=ref is None, end=depth == 0, interpolation=module.interpolation, **norm)
        ref = RefineBlock(mult * nf, act, name=name, **kw)(inputs, layer.shape[1:3], y)
    h = act(_norm(num_classes, dt, "normalizer")(ref, y))
    h = ncsn_conv3x3(nf, x.shape[-1], dtype=dt, name="end_conv")(h)
    return h.astype(jnp.float32)


def _check_inputs(x: jax.Array, labels: jax.Array, name: str) -> jax.Array:
    if x.ndim != 4:
        raise ValueError(f"{name} expects images [B, H, W, C], got shape {x.shape}")
    return noise_index(jnp.broadcast_to(jnp.asarray(labels), (x.shape[0],)))


class _RefineNet(ImageScoreNet):
    num_scales: int = 232
    nonlinearity: str = "elu"
    interpolation: str = "bilinear"


class NCSNv2(_RefineNet):
    """NCSNv2 RefineNet: ``(x [B,H,W,C], labels [B] int) -> score [B,H,W,C]``.

    ``architecture``: ``"ncsnv2_64"`` (up to 64 px, e.g. CIFAR-10, CelebA; H and W divisible by
    4), ``"ncsnv2_128"`` (by 4) or ``"ncsnv2_256"`` (by 8), deeper and wider at the bottom.
    """

    architecture: str = "ncsnv2_64"
    scale_by_sigma: bool = True

    @nn.compact
    def __call__(self, x: jax.Array, labels: jax.Array, train: bool = False) -> jax.Array:
        del train
        if self.architecture not in ARCHITECTURES:
            choices = sorted(ARCHITECTURES)
            raise ValueError(
                f"Unknown NCSNv2 architecture {self.architecture!r}; choose one of {choices}."
            )
        labels = _check_inputs(x, labels, "NCSNv2")
        h = _refinenet(self, x, None, ARCHITECTURES[self.architecture], None)
        if self.scale_by_sigma:
            used = jnp.asarray(self.sigmas, jnp.float32)[labels]
            h = h / used[:, None, None, None]
        return h


class NCSN(_RefineNet):
    """NCSNv1: the ``ncsnv2_64`` RefineNet with noise-conditional norms (``num_scales`` rows),
    output not divided by sigma (``sigma_min``/``sigma_max`` are for samplers only)."""

    sigma_max: float = 1.0
    num_scales: int = 10

    @nn.compact
    def __call__(self, x: jax.Array, labels: jax.Array, train: bool = False) -> jax.Array:
        del train
        labels = _check_inputs(x, labels, "NCSN")
        return _refinenet(self, x, labels, ARCHITECTURES["ncsnv2_64"], self.num_scales)


# Flax names ``<list>_<i>`` of entries of the reference's ``nn.ModuleList``s.
_LIST_ENTRY = re.compile(r"^(res\d+|adapt_convs|convs|norms)_(\d+)$")


def _torch_prefix(path: tuple[str, ...]) -> str:
    parts = []
    for segment in path:
        match = _LIST_ENTRY.match(segment)
        parts.append(f"{match[1]}.{match[2]}" if match else segment)
    return ".".join(parts)


def params_from_torch_state_dict(
    state_dict: Mapping[str, np.ndarray], model: NCSNv2 | NCSN
) -> dict:
    """``{"params": ...}`` (float32 numpy) of ``model`` from a reference NCSNv2 / NCSN state dict;
    NCSNv2's ``sigmas`` buffer must equal ``model.sigmas`` if the output is divided by it."""
    name = type(model).__name__
    size, channels = model.image_size, model.num_channels
    abstract = _torch_import.abstract_params(model, (1, size, size, channels))
    buffers = {}
    if isinstance(model, NCSNv2):
        used = model.scale_by_sigma
        buffers["sigmas"] = _torch_import.check_sigmas_buffer(model.sigmas, name, used=used)
    params = convert_state_dict(
        state_dict, abstract, _torch_prefix, buffers=buffers, model_name=name
    )
    return {"params": params}
