"""The DDPM U-Net (Ho et al., 2020), the paper's DDPM baselines: ``DDPM()(x [B,H,W,C], labels)``.

VP / sub-VP: labels are time steps (e.g. ``999 t``), the network predicts the noise; SMLD /
discrete VE (``scale_by_sigma``): labels index the descending ``sigmas`` and the output is divided
by ``sigmas[labels]``. Parameter names are the original Flax code's (``ResnetBlockDDPM_3/NIN_0/W``).
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from scoresde_jax.io.state_dict import convert_state_dict
from scoresde_jax.models import _torch_import
from scoresde_jax.models.layers import (
    AttnBlockpp,
    Downsample,
    Dtype,
    GroupNorm,
    ResnetBlockDDPMpp,
    Upsample,
    conv3x3,
    dense,
    get_act,
    get_timestep_embedding,
)

# DDPM normalises with 32 groups everywhere (every width a multiple of 32), unlike NCSN++.
_GROUPS = 32


def noise_index(labels: jax.Array) -> jax.Array:
    """Labels as int32 indices into ``sigmas``; floats (``init``'s placeholders) are rounded."""
    if jnp.issubdtype(labels.dtype, jnp.integer):
        return labels.astype(jnp.int32)
    return jnp.round(labels).astype(jnp.int32)


def smld_sigmas(
    sigma_min: float, sigma_max: float, num_scales: int, noise_levels: Sequence | None = None
) -> np.ndarray:
    """The geometric SMLD noise levels, descending from ``sigma_max``, or ``noise_levels`` (a
    converted checkpoint's own) when given."""
    if noise_levels is not None:
        return np.asarray(noise_levels, np.float64)
    return np.exp(np.linspace(np.log(sigma_max), np.log(sigma_min), num_scales))


class ImageScoreNet(nn.Module):
    """Attributes of the image networks: base width, input range (``centered``: [-1, 1], else
    [0, 1]), SMLD noise levels, training image shape (for conversion), activation, and compute
    ``dtype`` (parameters and the output stay float32)."""

    nf: int = 128
    centered: bool = False
    sigma_min: float = 0.01
    sigma_max: float = 50.0
    num_scales: int = 1000
    noise_levels: tuple[float, ...] | None = None
    image_size: int = 32
    num_channels: int = 3
    nonlinearity: str = "swish"
    dtype: Dtype = jnp.float32

    @property
    def sigmas(self) -> np.ndarray:
        """The descending SMLD noise levels that integer labels index (float64)."""
        return smld_sigmas(self.sigma_min, self.sigma_max, self.num_scales, self.noise_levels)


def _namer() -> Callable[[str], str]:
    """``name(kind) -> "<kind>_<n>"``, counting per kind as Flax's automatic names do."""
    counts: collections.Counter[str] = collections.Counter()

    def name(kind: str) -> str:
        counts[kind] += 1
        return f"{kind}_{counts[kind] - 1}"

    return name


class DDPM(ImageScoreNet):
    """DDPM's U-Net: ``(x [B,H,W,C], labels [B]) -> [B,H,W,C]`` (noise or ``sigma * score``).

    Every width ``nf * mult`` is a multiple of 32; the image is halved ``len(ch_mult) - 1`` times;
    ``num_res_blocks`` per resolution down, one more up.
    """

    ch_mult: Sequence[int] = (1, 2, 2, 2)
    num_res_blocks: int = 2
    attn_resolutions: Sequence[int] = (16,)
    dropout: float = 0.1
    resamp_with_conv: bool = True
    conditional: bool = True
    scale_by_sigma: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, labels: jax.Array, train: bool = False) -> jax.Array:
        if x.ndim != 4:
            raise ValueError(f"DDPM expects images [B, H, W, C], got shape {x.shape}")
        act = get_act(self.nonlinearity)
        dt = self.dtype
        labels = jnp.broadcast_to(jnp.asarray(labels), (x.shape[0],))
        # The original's names; its blocks start as the identity (zero-initialised last layer).
        name = _namer()

        def resnet(h, out_ch=None):
            kw = dict(act=act, out_ch=out_ch, dropout=self.dropout, num_groups=_GROUPS, dtype=dt)
            return ResnetBlockDDPMpp(**kw, name=name("ResnetBlockDDPM"))(h, temb, train)

        def attention(h):
            return AttnBlockpp(num_groups=_GROUPS, dtype=dt, name=name("AttnBlock"))(h)

        temb = None
        if self.conditional:
            temb = get_timestep_embedding(labels, self.nf)
            temb = dense(4 * self.nf, dtype=dt, name=name("Dense"))(temb)
            temb = dense(4 * self.nf, dtype=dt, name=name("Dense"))(act(temb))

        h = x if self.centered else 2 * x - 1.0
        num_resolutions = len(self.ch_mult)
        resample = dict(with_conv=self.resamp_with_conv, dtype=dt)

        hs = [conv3x3(self.nf, dtype=dt, name=name("Conv"))(h)]
        for level, mult in enumerate(self.ch_mult):
            for _ in range(self.num_res_blocks):
                h = resnet(hs[-1], self.nf * mult)
                if h.shape[2] in self.attn_resolutions:
                    h = attention(h)
                hs.append(h)
            if level != num_resolutions - 1:
                hs.append(Downsample(**resample, name=name("Downsample"))(hs[-1]))

        h = resnet(hs[-1])
        h = attention(h)
        h = resnet(h)

        for level in reversed(range(num_resolutions)):
            for _ in range(self.num_res_blocks + 1):
                h = jnp.concatenate([h, hs.pop().astype(h.dtype)], axis=-1)
                h = resnet(h, self.nf * self.ch_mult[level])
            if h.shape[2] in self.attn_resolutions:
                h = attention(h)
            if level != 0:
                h = Upsample(**resample, name=name("Upsample"))(h)
        assert not hs

        h = act(GroupNorm(_GROUPS, dtype=dt, name=name("GroupNorm"))(h))
        h = conv3x3(x.shape[-1], init_scale=0.0, dtype=dt, name=name("Conv"))(h)
        h = h.astype(jnp.float32)

        if self.scale_by_sigma:
            used = jnp.asarray(self.sigmas, jnp.float32)[noise_index(labels)]
            h = h / used[:, None, None, None]
        return h


def params_from_torch_state_dict(state_dict: Mapping[str, np.ndarray], model: DDPM) -> dict:
    """``{"params": ...}`` from a state dict of the PyTorch ``DDPM`` (``all_modules`` in call
    order); its ``sigmas`` buffer must equal ``model.sigmas`` with ``scale_by_sigma``."""
    size, channels = model.image_size, model.num_channels
    variables, order = _torch_import.trace(model, (1, size, size, channels))
    prefix = _torch_import.all_modules_prefix({name: i for i, name in enumerate(order)}, "DDPM")
    check = _torch_import.check_sigmas_buffer(model.sigmas, "DDPM", used=model.scale_by_sigma)
    params = convert_state_dict(
        state_dict, variables["params"], prefix, buffers={"sigmas": check}, model_name="DDPM"
    )
    return {"params": params}
