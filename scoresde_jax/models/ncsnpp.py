"""NCSN++ and DDPM++ (Song et al., 2021), the U-Net of the paper's best models; DDPM++ is NCSN++
with positional embeddings, no FIR and no progressive growing (both are ``"ncsnpp"`` in configs).
Names and numerics follow the paper's Flax code and PyTorch port: checkpoints of both convert."""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from scoresde_jax.io.state_dict import (
    convert_state_dict,
    mismatch_error,
    strip_module_prefix,
)
from scoresde_jax.models import _torch_import, layers
from scoresde_jax.models.ddpm import ImageScoreNet, smld_sigmas
from scoresde_jax.models.layers import (
    AttnBlockpp,
    Combine,
    Downsample,
    GaussianFourierProjection,
    GroupNorm,
    ResnetBlockBigGANpp,
    ResnetBlockDDPMpp,
    Upsample,
    conv3x3,
    dense,
    get_timestep_embedding,
)

_CHOICES = {
    "resblock_type": ("ddpm", "biggan"),
    "progressive": ("none", "output_skip", "residual"),
    "progressive_input": ("none", "input_skip", "residual"),
    "progressive_combine": ("sum", "cat"),
    "embedding_type": ("fourier", "positional"),
    "attention_type": ("ddpm",),  # the reference has no other
}


class NCSNpp(ImageScoreNet):
    """NCSN++ / DDPM++: ``(x: [B, H, W, C], labels: [B]) -> [B, H, W, C]``.

    ``labels``: noise levels sigma for the ``"fourier"`` embedding (of ``log sigma``, std
    ``fourier_scale``; VE), else time labels (``999 t`` or a step index). String attributes take
    the values of ``_CHOICES``; ``resamp_with_conv`` applies to ``resblock_type="ddpm"`` only
    (``"biggan"`` resamples inside the blocks); ``init_scale`` scales the last layer of every
    branch and the output conv (0: identity branches); ``conv_size`` can only be 3 (the reference
    ignores it); ``scale_by_sigma`` divides by sigma (positional: ``sigmas()[int(label)]``).
    """

    ch_mult: tuple[int, ...] = (1, 2, 2, 2)
    num_res_blocks: int = 4
    attn_resolutions: tuple[int, ...] = (16,)
    dropout: float = 0.1
    resamp_with_conv: bool = True
    conditional: bool = True
    fir: bool = True
    fir_kernel: tuple[int, ...] = (1, 3, 3, 1)
    skip_rescale: bool = True
    resblock_type: str = "biggan"
    progressive: str = "none"
    progressive_input: str = "residual"
    progressive_combine: str = "sum"
    attention_type: str = "ddpm"
    embedding_type: str = "fourier"
    fourier_scale: float = 16.0
    init_scale: float = 0.0
    conv_size: int = 3
    scale_by_sigma: bool = True

    def sigmas(self) -> np.ndarray:  # a method here, float32
        """:func:`~scoresde_jax.models.ddpm.smld_sigmas` as float32."""
        return smld_sigmas(
            self.sigma_min, self.sigma_max, self.num_scales, self.noise_levels
        ).astype(np.float32)

    def _options(self) -> dict[str, str]:
        opts = {field: getattr(self, field).lower() for field in _CHOICES}
        for field, value in opts.items():
            if value not in _CHOICES[field]:
                raise ValueError(f"NCSNpp: unknown {field}={value!r}; use one of {_CHOICES[field]}")
        if self.conv_size != 3:
            raise ValueError(f"NCSNpp: conv_size={self.conv_size}; only 3x3 convolutions exist")
        return opts

    @nn.compact
    def __call__(self, x: jax.Array, labels: jax.Array, train: bool = False) -> jax.Array:
        opts = self._options()
        if x.ndim != 4:
            raise ValueError(f"NCSNpp expects NHWC images, got shape {x.shape}")
        act = layers.get_act(self.nonlinearity)
        nf, dt = self.nf, self.dtype
        num_resolutions = len(self.ch_mult)
        labels = jnp.broadcast_to(jnp.asarray(labels), (x.shape[0],))
        ddpm_blocks = opts["resblock_type"] == "ddpm"
        progressive, progressive_input = opts["progressive"], opts["progressive_input"]

        used_sigmas = None
        if opts["embedding_type"] == "fourier":
            used_sigmas = labels.astype(jnp.float32)
            fourier = GaussianFourierProjection(embedding_size=nf, scale=self.fourier_scale)
            temb = fourier(jnp.log(used_sigmas))
        else:
            if self.scale_by_sigma:
                # Step indices (or 999 t), truncated as the reference's ``sigmas[labels.long()]``.
                used_sigmas = jnp.asarray(self.sigmas())[labels.astype(jnp.int32)]
            temb = get_timestep_embedding(labels, nf)

        if self.conditional:
            temb = dense(nf * 4, dtype=dt)(temb)
            temb = dense(nf * 4, dtype=dt)(act(temb))
        else:
            temb = None

        branch = dict(init_scale=self.init_scale, skip_rescale=self.skip_rescale, dtype=dt)
        resample = dict(fir=self.fir, fir_kernel=tuple(self.fir_kernel), dtype=dt)
        attn_block = functools.partial(AttnBlockpp, **branch)
        if ddpm_blocks:
            block, kw = ResnetBlockDDPMpp, branch
        else:
            block, kw = ResnetBlockBigGANpp, {**branch, **resample}
        resnet_block = functools.partial(block, act=act, dropout=self.dropout, **kw)

        output_conv = functools.partial(
            conv3x3, self.num_channels, init_scale=self.init_scale, dtype=dt
        )

        def merge(a, b):
            return (a + b) / math.sqrt(2.0) if self.skip_rescale else a + b

        x = x.astype(jnp.float32)
        x = x if self.centered else 2 * x - 1.0

        input_pyramid = x if progressive_input != "none" else None
        hs = [conv3x3(nf, dtype=dt)(x)]
        for i_level in range(num_resolutions):
            for _ in range(self.num_res_blocks):
                h = resnet_block(out_ch=nf * self.ch_mult[i_level])(hs[-1], temb, train)
                if h.shape[1] in self.attn_resolutions:
                    h = attn_block()(h)
                hs.append(h)
            if i_level != num_resolutions - 1:
                if ddpm_blocks:
                    h = Downsample(with_conv=self.resamp_with_conv, **resample)(hs[-1])
                else:
                    h = resnet_block(down=True)(hs[-1], temb, train)
                if progressive_input == "input_skip":
                    input_pyramid = Downsample(with_conv=False, **resample)(input_pyramid)
                    h = Combine(method=opts["progressive_combine"], dtype=dt)(input_pyramid, h)
                elif progressive_input == "residual":
                    down = Downsample(out_ch=h.shape[-1], with_conv=True, **resample)
                    h = input_pyramid = merge(down(input_pyramid), h)
                hs.append(h)

        h = hs[-1]
        h = resnet_block()(h, temb, train)
        h = attn_block()(h)
        h = resnet_block()(h, temb, train)

        pyramid = None
        for i_level in reversed(range(num_resolutions)):
            for _ in range(self.num_res_blocks + 1):
                h = jnp.concatenate([h, hs.pop().astype(h.dtype)], axis=-1)
                h = resnet_block(out_ch=nf * self.ch_mult[i_level])(h, temb, train)
            if h.shape[1] in self.attn_resolutions:
                h = attn_block()(h)

            if progressive != "none":
                if i_level == num_resolutions - 1:
                    normed = act(GroupNorm(dtype=dt)(h))
                    if progressive == "output_skip":
                        pyramid = output_conv()(normed)
                    else:
                        pyramid = conv3x3(h.shape[-1], dtype=dt)(normed)
                elif progressive == "output_skip":
                    pyramid = Upsample(with_conv=False, **resample)(pyramid)
                    normed = act(GroupNorm(dtype=dt)(h))
                    pyramid = pyramid + output_conv()(normed)
                else:
                    up = Upsample(out_ch=h.shape[-1], with_conv=True, **resample)
                    h = pyramid = merge(up(pyramid), h)

            if i_level != 0:
                if ddpm_blocks:
                    h = Upsample(with_conv=self.resamp_with_conv, **resample)(h)
                else:
                    h = resnet_block(up=True)(h, temb, train)

        assert not hs, "every skip connection is used once"
        if progressive == "output_skip":
            h = pyramid
        else:
            h = act(GroupNorm(dtype=dt)(h))
            h = output_conv()(h)

        h = h.astype(jnp.float32)
        if self.scale_by_sigma:
            h = h / used_sigmas[:, None, None, None]
        return h


# Modules are hashable frozen dataclasses: one trace serves every conversion of a configuration.
@functools.lru_cache(maxsize=16)
def _trace(model: NCSNpp) -> tuple[dict, tuple[str, ...]]:
    shape = (1, model.image_size, model.image_size, model.num_channels)
    return _torch_import.trace(model, shape, jnp.float32)


def abstract_variables(model: NCSNpp) -> dict:
    """Shapes and dtypes of ``model.init(...)`` (``jax.ShapeDtypeStruct`` leaves), not allocated."""
    return jax.tree.map(lambda leaf: leaf, _trace(model)[0])  # fresh dicts


def count_params(model: NCSNpp) -> int:
    """Number of parameters (the Fourier frequencies included, as PyTorch counts them)."""
    tree = abstract_variables(model)["params"]
    return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(tree))


def torch_trainable_keys(keys: list[str], model: NCSNpp) -> list[str]:
    """The keys of ``model.parameters()`` that train (all but ``sigmas`` and the Fourier
    frequencies) in ``state_dict`` order, the order of the PyTorch EMA's ``shadow_params``."""
    stripped = list(strip_module_prefix(dict.fromkeys(keys)))
    fourier = set()
    if model.embedding_type.lower() == "fourier":
        indices = sorted({int(k.split(".")[1]) for k in stripped if k.startswith("all_modules.")})
        if indices:
            fourier.add(f"all_modules.{indices[0]}.W")
    return [k for k in stripped if k != "sigmas" and k not in fourier]


def params_from_torch_state_dict(
    state_dict: Mapping[str, np.ndarray], model: NCSNpp, *, check_sigmas: bool = True
) -> dict:
    """``{"params": ...}`` (float32 numpy) of ``model`` from a ``score_sde_pytorch`` state dict.

    The ``all_modules.N`` indices pair, in order, with our submodules that have parameters, in
    call order. Where the network reads ``sigmas`` (positional ``scale_by_sigma``) it must equal
    ``sigmas()``. Raises ``ConversionError`` naming every missing, unexpected or misshapen key.
    """
    state_dict = strip_module_prefix(state_dict)
    indices = sorted(
        {int(k.split(".")[1]) for k in state_dict if re.match(r"all_modules\.\d+\.", k)}
    )
    variables, order = _trace(model)
    params = variables["params"]
    named = [name for name in order if name in params]
    # Our surplus modules (if any) get the indices that would follow the checkpoint's last one.
    start = indices[-1] + 1 if indices else 0
    indices += range(start, start + len(named) - len(indices))
    used = check_sigmas and model.scale_by_sigma and model.embedding_type.lower() == "positional"

    def ignore(key: str) -> bool:
        # Unconditional models still carry the (unused) time projections of the PyTorch
        # residual blocks, which always create them.
        return not model.conditional and bool(re.fullmatch(r"all_modules\.\d+\.Dense_0\.\w+", key))

    converted = convert_state_dict(
        state_dict,
        params,
        _torch_import.all_modules_prefix(dict(zip(named, indices, strict=False)), "NCSN++"),
        ignore=ignore,
        buffers={
            "sigmas": _torch_import.check_sigmas_buffer(
                model.sigmas(), "NCSN++", used=used, rtol=1e-5
            )
        },
        model_name="NCSN++",
    )
    return {"params": converted}


def params_from_flax_tree(tree: Mapping[str, Any], model: NCSNpp) -> dict:
    """An original ``score_sde`` (Flax) parameter tree (with or without ``"params"``), taken as is
    once its paths and shapes are checked (``ConversionError`` otherwise); a leading device axis
    of replicated (pmap) parameters is dropped."""
    tree = dict(tree)
    if set(tree) == {"params"}:
        tree = tree["params"]
    expected = traverse_util.flatten_dict(abstract_variables(model)["params"])
    given = traverse_util.flatten_dict(tree)
    missing = ["/".join(p) for p in expected if p not in given]
    unexpected = ["/".join(p) for p in given if p not in expected]
    mismatched, flat = [], {}
    for path, value in given.items():
        if path not in expected:
            continue
        value, shape = np.asarray(value), tuple(expected[path].shape)
        if value.shape != shape and value.shape[1:] == shape:
            value = value[0]
        if value.shape != shape:
            mismatched.append(f"{'/'.join(path)}: checkpoint {value.shape}, model expects {shape}")
            continue
        flat[path] = np.asarray(value, dtype=np.float32)
    what = "The parameter tree does not match this NCSN++"
    if error := mismatch_error(what, missing, unexpected, mismatched):
        raise error
    return {"params": traverse_util.unflatten_dict(flat)}
