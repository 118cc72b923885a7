"""The DDPM U-Net (Ho et al., 2020) as used by the paper for its DDPM baselines.

Wide residual blocks with GroupNorm (32 groups) and swish, self-attention at chosen resolutions,
a sinusoidal embedding of the time label added to every residual block, and skip connections
from every block of the downsampling path to the upsampling path.

``DDPM()(x, labels)`` takes images ``x: [B, H, W, C]`` and labels ``[B]``:

* VP / sub-VP training (``scale_by_sigma=False``): labels are (fractional) time steps, e.g.
  ``999 t``; the network predicts the noise.
* SMLD / VE discrete training (``scale_by_sigma=True``): labels are integer indices into the
  descending noise levels ``sigmas``; the embedding sees the index and the output is divided by
  ``sigmas[labels]``, so the network learns ``sigma * score``.

Parameter names follow the original Flax implementation (``Dense_0``, ``Conv_0``,
``ResnetBlockDDPM_3/NIN_0/W``, ``AttnBlock_1/GroupNorm_0/scale``, ...); PyTorch checkpoints of
the reference port (``all_modules.<i>....``) load with :func:`params_from_torch_state_dict`.
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
    Upsample,
    conv3x3,
    dense,
    get_act,
    get_timestep_embedding,
)

__all__ = [
    "DDPM",
    "AttnBlock",
    "GroupNorm",
    "NIN",
    "ResnetBlockDDPM",
    "params_from_torch_state_dict",
]

Dtype = Any

# DDPM normalises with 32 groups everywhere (so every width must be a multiple of 32), unlike
# NCSN++ whose groups shrink with narrow layers.
_GROUPS = 32


def noise_index(labels: jax.Array) -> jax.Array:
    """Labels as int32 indices into ``sigmas``; floating labels are rounded to the nearest index.

    Discrete VE labels are integers already (:func:`scoresde_jax.core.score.time_labels`); rounding
    lets callers that build shapes with float placeholders (e.g. ``init``) use the same call.
    """
    if jnp.issubdtype(labels.dtype, jnp.integer):
        return labels.astype(jnp.int32)
    return jnp.round(labels).astype(jnp.int32)


def smld_sigmas(
    sigma_min: float, sigma_max: float, num_scales: int, noise_levels: Sequence | None = None
) -> np.ndarray:
    """The SMLD noise levels, geometric and descending: ``sigmas[0] = sigma_max``; or the
    explicit ``noise_levels`` (those of a converted checkpoint) when given."""
    if noise_levels is not None:
        return np.asarray(noise_levels, np.float64)
    return np.exp(np.linspace(np.log(sigma_max), np.log(sigma_min), num_scales))


class GroupNorm(layers.GroupNorm):
    """:class:`scoresde_jax.models.layers.GroupNorm` with DDPM's fixed 32 groups."""

    num_groups: int | None = _GROUPS


NIN = layers.NIN


class AttnBlock(layers.AttnBlockpp):
    """DDPM's self-attention block: :class:`~scoresde_jax.models.layers.AttnBlockpp` with 32
    GroupNorm groups, a zero-initialised output projection and no skip rescaling."""

    skip_rescale: bool = False
    init_scale: float = 0.0
    num_groups: int | None = _GROUPS


class ResnetBlockDDPM(nn.Module):
    """DDPM's residual block: two 3x3 convolutions with a time-embedding bias in between.

    ``GroupNorm -> act -> conv -> (+ Dense(act(temb))) -> GroupNorm -> act -> dropout -> conv``,
    added to the input, which goes through a NIN (or a 3x3 conv with ``conv_shortcut``) when the
    number of channels changes.

    Attributes:
      act: activation.
      out_ch: output channels; default: the input channels.
      conv_shortcut: 3x3 conv instead of NIN on the shortcut.
      dropout: dropout rate, active when called with ``train=True`` (rng ``"dropout"``).
      dtype: compute dtype (parameters stay float32).
    """

    act: Callable[[jax.Array], jax.Array] = nn.swish
    out_ch: int | None = None
    conv_shortcut: bool = False
    dropout: float = 0.1
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(
        self, x: jax.Array, temb: jax.Array | None = None, train: bool = False
    ) -> jax.Array:
        c = x.shape[-1]
        out_ch = self.out_ch or c
        h = self.act(GroupNorm(dtype=self.dtype, name="GroupNorm_0")(x))
        h = conv3x3(out_ch, dtype=self.dtype, name="Conv_0")(h)
        if temb is not None:
            # A per-channel bias from the time embedding, shared by all pixels.
            bias = dense(out_ch, dtype=self.dtype, name="Dense_0")(self.act(temb))
            h = h + bias[:, None, None, :]
        h = self.act(GroupNorm(dtype=self.dtype, name="GroupNorm_1")(h))
        h = nn.Dropout(self.dropout)(h, deterministic=not train)
        # Zero-initialised, so every block starts as the identity.
        h = conv3x3(out_ch, init_scale=0.0, dtype=self.dtype, name="Conv_1")(h)
        x = x.astype(self.dtype)
        if c != out_ch:
            if self.conv_shortcut:
                x = conv3x3(out_ch, dtype=self.dtype, name="Conv_2")(x)
            else:
                x = NIN(out_ch, dtype=self.dtype, name="NIN_0")(x)
        return x + h


class DDPM(nn.Module):
    """DDPM's U-Net score / noise-prediction network: ``(x [B,H,W,C], labels [B]) -> [B,H,W,C]``.

    Attributes:
      nf: base width; the time embedding has ``4 nf`` features. Every width ``nf * mult`` must be
        a multiple of 32 (GroupNorm groups).
      ch_mult: width multiplier per resolution; the image is halved ``len(ch_mult) - 1`` times.
      num_res_blocks: residual blocks per resolution on the way down (one more on the way up).
      attn_resolutions: spatial sizes at which self-attention follows the residual blocks.
      dropout: dropout rate inside the residual blocks (``train=True``).
      resamp_with_conv: 3x3 convolutions in the up- and downsampling layers (else nearest
        neighbour and average pooling alone).
      conditional: condition on the labels (time-embedding); without it labels are ignored.
      centered: inputs are already in [-1, 1]; otherwise they are in [0, 1] and mapped there.
      scale_by_sigma: divide the output by ``sigmas[labels]``; labels are indices (floating
        labels are rounded), so this is for discrete VE training only.
      sigma_min: smallest SMLD noise level (``scale_by_sigma``).
      sigma_max: largest SMLD noise level (``scale_by_sigma``).
      num_scales: number of SMLD noise levels (``scale_by_sigma``).
      image_size: spatial size of the training images; used for shape inference in
        :func:`params_from_torch_state_dict` and for the attention layout there.
      num_channels: image channels.
      nonlinearity: activation name (``"swish"`` in every DDPM config).
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
        counts: collections.Counter[str] = collections.Counter()

        def name(kind: str) -> str:
            # The original Flax code relied on automatic names; spelling them out keeps the
            # parameter paths independent of the Python class names used here.
            index = counts[kind]
            counts[kind] += 1
            return f"{kind}_{index}"

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

        h = act(GroupNorm(dtype=dt, name=name("GroupNorm"))(h))
        h = conv3x3(x.shape[-1], init_scale=0.0, dtype=dt, name=name("Conv"))(h)
        h = h.astype(jnp.float32)

        if self.scale_by_sigma:
            used = jnp.asarray(self.sigmas, jnp.float32)[noise_index(labels)]
            h = h / used[:, None, None, None]
        return h


def params_from_torch_state_dict(state_dict: Mapping[str, np.ndarray], model: DDPM) -> dict:
    """``{"params": ...}`` (float32 numpy) of ``model`` from a reference ``DDPM`` state dict.

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
