"""Shared defaults of the CelebA 64x64 experiments (``ve/celeba_ncsnpp.py``, ``ve/ncsn/celeba*``,
``ve/ncsnv2/celeba.py``).

The CIFAR-10 defaults (``common.image_defaults``) with what the paper's CelebA configs change:
the dataset (centre crop of 140 pixels, resized to 64x64), ``sigma_max = 90``, a signal-to-noise
ratio of 0.17 for the Langevin corrector, samples drawn during evaluation, and evaluation from
the first snapshot.
"""

import ml_collections
from ml_collections.config_dict import placeholder

from configs.common import image_defaults


def get_default_configs() -> ml_collections.ConfigDict:
    config = image_defaults()

    config.sampling.snr = 0.17

    evaluate = config.eval
    evaluate.begin_ckpt = 1
    evaluate.end_ckpt = 26
    evaluate.enable_sampling = True

    data = config.data
    data.dataset = "CELEBA"
    data.image_size = 64
    data.num_classes = placeholder(int)

    config.model.sigma_max = 90.0
    return config
