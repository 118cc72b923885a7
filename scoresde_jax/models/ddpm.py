"""The DDPM U-Net (Ho et al., 2020), the paper's DDPM baselines: ``DDPM()(x [B,H,W,C], labels)``.

* VP / sub-VP (``scale_by_sigma=False``): labels are (fractional) time steps, e.g. ``999 t``; the
  network predicts the noise.
* SMLD / discrete VE (``scale_by_sigma=True``): labels index the descending noise levels
  ``sigmas``; the output is divided by ``sigmas[labels]``, so the network learns ``sigma * score``.

Parameter names follow the original Flax implementation (``ResnetBlockDDPM_3/NIN_0/W``, ...);
PyTorch checkpoints of the reference port load with :func:`params_from_torch_state_dict`.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from scoresde_jax.io.state_dict import convert_state_dict
from scoresde_jax.models import _torch_import, layers
from scoresde_jax.models.layers import (
    Downsample,
    GroupNorm,
    Upsample,
    conv3x3,
    dense,
    get_act,
    get_timestep_embedding,
)

__all__ = ["DDPM", "AttnBlock", "ResnetBlockDDPM", "params_from_torch_state_dict"]

Dtype = Any

# DDPM normalises with 32 groups everywhere (so every width must be a multiple of 32), unlike
# NCSN++ whose groups shrink with narrow layers.
_GROUPS = 32


def noise_index(labels: jax.Array) -> jax.Array:
    """Labels as int32 indices into ``sigmas``; floating labels are rounded to the nearest index.

    Discrete VE labels are integers already; rounding lets callers that build shapes with float
    placeholders (e.g. ``init``) use the same call.
    """
    if jnp.issubdtype(labels.dtype, jnp.integer):
        return labels.astype(jnp.int32)
    return jnp.round(labels).astype(jnp.int32)


def smld_sigmas(
    sigma_min: float, sigma_max: float, num_scales: int, noise_levels: Sequence | None = None
) -> np.ndarray:
    """The SMLD noise levels, geometric and descending (``sigmas[0] = sigma_max``), or the
    explicit ``noise_levels`` of a converted checkpoint when given."""
    if noise_levels is not None:
        return np.asarray(noise_levels, np.float64)
    return np.exp(np.linspace(np.log(sigma_max), np.log(sigma_min), num_scales))


class AttnBlock(layers.AttnBlockpp):
    """DDPM's self-attention: 32 groups, zero-initialised output, no skip rescaling."""

    skip_rescale: bool = False
    init_scale: float = 0.0
    num_groups: int | None = _GROUPS


class ResnetBlockDDPM(layers.ResnetBlockDDPMpp):
    """DDPM's residual block: :class:`~scoresde_jax.models.layers.ResnetBlockDDPMpp` with 32
    groups, a zero-initialised last convolution (every block starts as the identity) and no skip
    rescaling."""

    skip_rescale: bool = False
    init_scale: float = 0.0
    num_groups: int | None = _GROUPS


def _namer() -> Callable[[str], str]:
    """``name(kind) -> "<kind>_<n>"``, counting per kind as Flax's automatic names do."""
    counts: collections.Counter[str] = collections.Counter()

    def name(kind: str) -> str:
        counts[kind] += 1
        return f"{kind}_{counts[kind] - 1}"

    return name


class DDPM(nn.Module):
    """DDPM's U-Net score / noise-prediction network: ``(x [B,H,W,C], labels [B]) -> [B,H,W,C]``.

    Attributes:
      nf: base width; the time embedding has ``4 nf`` features. Every width ``nf * mult`` must be
        a multiple of 32 (GroupNorm groups).
      ch_mult: width multiplier per resolution; the image is halved ``len(ch_mult) - 1`` times.
      num_res_blocks: residual blocks per resolution on the way down (one more on the way up).
      attn_resolutions: spatial sizes at which self-attention follows the residual blocks.
      centered: inputs are already in [-1, 1]; otherwise they are in [0, 1] and mapped there.
      scale_by_sigma: divide the output by ``sigmas[labels]`` (discrete VE training only).
      sigma_min, sigma_max, num_scales, noise_levels: the SMLD noise levels (``scale_by_sigma``).
      image_size, num_channels: training image shape, for :func:`params_from_torch_state_dict`.
      dtype: compute dtype, e.g. ``jnp.bfloat16``; parameters and the output stay float32.
    """

    nf: int = 128
    ch_mult: Sequence[int] = (1, 2, 2, 2)
    num_res_blocks: int = 2
    attn_resolutions: Sequence[int] = (16,)
    dropout: float = 0.1
    resamp_with_conv: bool = True
    conditional: bool = True
    centered: bool = False
    scale_by_sigma: bool = False
    sigma_min: float = 0.01
    sigma_max: float = 50.0
    num_scales: int = 1000
    image_size: int = 32
    num_channels: int = 3
    nonlinearity: str = "swish"
    dtype: Dtype = jnp.float32
    noise_levels: tuple[float, ...] | None = None

    @property
    def sigmas(self) -> np.ndarray:
        """The descending SMLD noise levels that integer labels index (float64)."""
        return smld_sigmas(self.sigma_min, self.sigma_max, self.num_scales, self.noise_levels)

    @nn.compact
    def __call__(self, x: jax.Array, labels: jax.Array, train: bool = False) -> jax.Array:
        if x.ndim != 4:
            raise ValueError(f"DDPM expects images [B, H, W, C], got shape {x.shape}")
        act = get_act(self.nonlinearity)
        dt = self.dtype
        labels = jnp.broadcast_to(jnp.asarray(labels), (x.shape[0],))
        # Names are spelled out so that parameter paths do not depend on the Python class names.
        name = _namer()

        def resnet(h, out_ch=None):
            block = ResnetBlockDDPM(
                act=act, out_ch=out_ch, dropout=self.dropout, dtype=dt, name=name("ResnetBlockDDPM")
            )
            return block(h, temb, train)

        def attention(h):
            return AttnBlock(dtype=dt, name=name("AttnBlock"))(h)

        temb = None
        if self.conditional:
            temb = get_timestep_embedding(labels, self.nf)
            temb = dense(4 * self.nf, dtype=dt, name=name("Dense"))(temb)
            temb = dense(4 * self.nf, dtype=dt, name=name("Dense"))(act(temb))

        h = x if self.centered else 2 * x - 1.0
        num_resolutions = len(self.ch_mult)

        hs = [conv3x3(self.nf, dtype=dt, name=name("Conv"))(h)]
        for level, mult in enumerate(self.ch_mult):
            for _ in range(self.num_res_blocks):
                h = resnet(hs[-1], self.nf * mult)
                if h.shape[2] in self.attn_resolutions:
                    h = attention(h)
                hs.append(h)
            if level != num_resolutions - 1:
                down = Downsample(
                    with_conv=self.resamp_with_conv, dtype=dt, name=name("Downsample")
                )
                hs.append(down(hs[-1]))

        h = resnet(hs[-1])
        h = attention(h)
        h = resnet(h)

        for level in reversed(range(num_resolutions)):
            for _ in range(self.num_res_blocks + 1):
                skip = hs.pop()
                h = resnet(
                    jnp.concatenate([h, skip.astype(h.dtype)], axis=-1),
                    self.nf * self.ch_mult[level],
                )
            if h.shape[2] in self.attn_resolutions:
                h = attention(h)
            if level != 0:
                h = Upsample(with_conv=self.resamp_with_conv, dtype=dt, name=name("Upsample"))(h)
        assert not hs

        h = act(GroupNorm(_GROUPS, dtype=dt, name=name("GroupNorm"))(h))
        h = conv3x3(x.shape[-1], init_scale=0.0, dtype=dt, name=name("Conv"))(h)
        h = h.astype(jnp.float32)

        if self.scale_by_sigma:
            used = jnp.asarray(self.sigmas, jnp.float32)[noise_index(labels)]
            h = h / used[:, None, None, None]
        return h


def params_from_torch_state_dict(state_dict: Mapping[str, np.ndarray], model: DDPM) -> dict:
    """Converts a ``state_dict`` of the PyTorch reference ``DDPM`` into ``{"params": ...}``.

    The reference's ``all_modules`` list is the order in which the network calls its
    submodules (those without parameters included), so any configuration converts. The
    ``sigmas`` buffer must equal ``model.sigmas`` where the network divides by it
    (``scale_by_sigma``).

    Raises:
      ValueError: missing or unexpected keys, shape mismatches, or a disagreeing ``sigmas``.
    """
    size, channels = model.image_size, model.num_channels
    variables, order = _torch_import.trace(model, (1, size, size, channels))
    params = convert_state_dict(
        state_dict,
        variables["params"],
        _torch_import.all_modules_prefix({name: i for i, name in enumerate(order)}, "DDPM"),
        buffers={
            "sigmas": _torch_import.check_sigmas_buffer(
                model.sigmas, "DDPM", used=model.scale_by_sigma
            )
        },
        model_name="DDPM",
    )
    return {"params": params}
