"""scoresde_jax: score-based generative modeling through SDEs (Song et al., ICLR 2021) in JAX.

The names users need most are re-exported here; everything else lives in its module:
``sde``, ``score``, ``losses``, ``sampling``, ``likelihood``, ``gmm``, ``models``, ``train``,
``evaluate``.
"""

from scoresde_jax.gmm import GaussianMixture
from scoresde_jax.guidance import classifier_guided_score_fn
from scoresde_jax.likelihood import bits_per_dim, log_likelihood
from scoresde_jax.losses import get_loss_fn
from scoresde_jax.sampling import decode, encode, ode_sample, pc_sample
from scoresde_jax.score import get_score_fn
from scoresde_jax.sde import VESDE, VPSDE, SubVPSDE, get_sde

__version__ = "0.1.0"

__all__ = [
    "GaussianMixture",
    "SubVPSDE",
    "VESDE",
    "VPSDE",
    "bits_per_dim",
    "classifier_guided_score_fn",
    "decode",
    "encode",
    "get_loss_fn",
    "get_score_fn",
    "get_sde",
    "log_likelihood",
    "ode_sample",
    "pc_sample",
]
