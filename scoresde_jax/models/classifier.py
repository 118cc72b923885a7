"""Noise-conditional classifiers ``p_t(y | x(t))`` for class-conditional sampling:
``model.apply(params, x [B, H, W, C] (unit variance), noise_level [B] = sigma_t / alpha_t)``
gives logits ``[B, num_classes]``. The noise level is embedded as in NCSN++ and added to every
residual block (paper, Appendix I.1). ``"wide_resnet"``: the paper's WRN-28-10 for CIFAR-10 with
GroupNorm for BatchNorm, so a logit depends on its own example only (as the per-example gradient
of guidance needs); ``"small_cnn"``: a small CNN for 28x28 digits.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from scoresde_jax.models.layers import GaussianFourierProjection, GroupNorm


def _groups(channels: int, max_groups: int = 32) -> int:
    """The most groups dividing ``channels``: at most ``max_groups``, >= 4 channels each."""
    limit = max(1, min(max_groups, channels // 4))
    return max(g for g in range(1, limit + 1) if channels % g == 0)


class NoiseEmbedding(nn.Module):
    """``noise_level [B] -> [B, dim]``: Fourier features of ``log sigma``, Dense, SiLU, Dense."""

    dim: int = 128
    fourier_scale: float = 16.0

    @nn.compact
    def __call__(self, noise_level: jax.Array) -> jax.Array:
        log_sigma = jnp.log(noise_level.astype(jnp.float32))
        emb = GaussianFourierProjection(embedding_size=self.dim // 2, scale=self.fourier_scale)(
            log_sigma
        )
        emb = nn.Dense(self.dim)(emb)
        return nn.Dense(self.dim)(nn.silu(emb))


class _WideBlock(nn.Module):
    """Pre-activation wide residual block with the noise embedding added after the first conv."""

    features: int
    stride: int
    dropout: float

    @nn.compact
    def __call__(self, x: jax.Array, temb: jax.Array, train: bool) -> jax.Array:
        h = nn.silu(GroupNorm(_groups(x.shape[-1]))(x))
        shortcut = x
        if x.shape[-1] != self.features or self.stride != 1:
            conv = nn.Conv(self.features, (1, 1), self.stride, use_bias=False, name="shortcut")
            shortcut = conv(h)
        h = nn.Conv(self.features, (3, 3), strides=self.stride, padding=1, use_bias=False)(h)
        h = h + nn.Dense(self.features, name="temb_proj")(nn.silu(temb))[:, None, None, :]
        h = nn.silu(GroupNorm(_groups(self.features))(h))
        h = nn.Dropout(self.dropout, deterministic=not train)(h)
        h = nn.Conv(self.features, (3, 3), padding=1, use_bias=False)(h)
        return h + shortcut


class NoiseConditionalWideResNet(nn.Module):
    """WRN-``depth``-``widen_factor`` (Zagoruyko & Komodakis, 2016) conditioned on the noise
    level: ``depth = 6 n + 4`` (n blocks per group), groups ``16 k, 32 k, 64 k`` wide."""

    num_classes: int = 10
    depth: int = 28
    widen_factor: int = 10
    dropout: float = 0.0
    embed_dim: int = 128
    fourier_scale: float = 16.0

    @nn.compact
    def __call__(self, x: jax.Array, noise_level: jax.Array, train: bool = False) -> jax.Array:
        if (self.depth - 4) % 6 or self.depth < 10:
            raise ValueError(
                f"Wide ResNet depth={self.depth} must be 6 n + 4 with n >= 1 (e.g. 10, 16, 28)."
            )
        n = (self.depth - 4) // 6
        noise_level = jnp.broadcast_to(noise_level, (x.shape[0],))
        temb = NoiseEmbedding(self.embed_dim, self.fourier_scale)(noise_level)
        h = nn.Conv(16, (3, 3), padding=1, use_bias=False, name="stem")(x)
        for group, width in enumerate((16, 32, 64)):
            for block in range(n):
                stride = 2 if group > 0 and block == 0 else 1
                h = _WideBlock(width * self.widen_factor, stride, self.dropout)(h, temb, train)
        h = nn.silu(GroupNorm(_groups(h.shape[-1]))(h))
        h = jnp.mean(h, axis=(1, 2))
        return nn.Dense(self.num_classes, name="logits")(h)


class NoiseConditionalCNN(nn.Module):
    """A small noise-conditional CNN for 28x28 digits: residual stages, each followed by 2x2
    average pooling (28 -> 14 -> 7 -> 3), then a global average and a linear layer."""

    num_classes: int = 10
    channels: Sequence[int] = (32, 64, 128)
    embed_dim: int = 64
    fourier_scale: float = 16.0

    @nn.compact
    def __call__(self, x: jax.Array, noise_level: jax.Array, train: bool = False) -> jax.Array:
        del train  # no dropout
        noise_level = jnp.broadcast_to(noise_level, (x.shape[0],))
        temb = nn.silu(NoiseEmbedding(self.embed_dim, self.fourier_scale)(noise_level))
        h = x
        for c in self.channels:
            h = nn.Conv(c, (3, 3), padding=1)(h)
            h = h + nn.Dense(c)(temb)[:, None, None, :]
            skip = h
            h = nn.silu(GroupNorm(_groups(c))(h))
            h = nn.Conv(c, (3, 3), padding=1)(h)
            h = nn.silu(GroupNorm(_groups(c))(h)) + skip
            h = nn.avg_pool(h, (2, 2), strides=(2, 2))
        h = jnp.mean(h, axis=(1, 2))
        return nn.Dense(self.num_classes, name="logits")(h)


CLASSIFIERS: dict[str, type[nn.Module]] = {
    "wide_resnet": NoiseConditionalWideResNet,
    "small_cnn": NoiseConditionalCNN,
}


def get_classifier(name: str, **kwargs) -> nn.Module:
    """The classifier ``name`` of :data:`CLASSIFIERS` built with the module's attributes."""
    if name not in CLASSIFIERS:
        raise ValueError(f"Unknown classifier {name!r}; choose one of {sorted(CLASSIFIERS)}.")
    return CLASSIFIERS[name](**kwargs)


def count_params(model: nn.Module, image_shape: tuple[int, int, int]) -> int:
    """Number of parameters of ``model`` for images of ``image_shape`` (traced, not computed)."""
    x, noise_level = jnp.zeros((1, *image_shape)), jnp.ones((1,), jnp.float32)
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), x, noise_level)
    return sum(math.prod(a.shape) for a in jax.tree.leaves(shapes))
