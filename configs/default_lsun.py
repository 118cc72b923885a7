"""Shared defaults of the 256x256 (and larger) experiments: LSUN bedroom and church, FFHQ and
CelebA-HQ at 256 and 1024 pixels, and NCSNv2 on LSUN bedroom at 128.

The CIFAR-10 defaults (``common.image_defaults``) with what the paper's LSUN configs change:
batch 64, 2.4M iterations, a preemption checkpoint every 5,000 steps, ``sigma_max = 378`` with
2,000 noise scales (VE), no dropout, a signal-to-noise ratio of 0.075, and evaluation of
snapshots 50 to 96 with samples.
Each experiment names its dataset: LSUN needs ``data.category``; FFHQ and CelebA-HQ read a
TFRecord file given with ``--config.data.path``.
"""

import ml_collections
from ml_collections.config_dict import placeholder

from configs.common import image_defaults


def get_default_configs() -> ml_collections.ConfigDict:
    config = image_defaults()

    training = config.training
    training.batch_size = 64
    training.n_iters = 2_400_001
    training.snapshot_freq_for_preemption = 5_000

    config.sampling.snr = 0.075

    evaluate = config.eval
    evaluate.begin_ckpt = 50
    evaluate.end_ckpt = 96
    evaluate.batch_size = 512
    evaluate.enable_sampling = True

    data = config.data
    data.dataset = "LSUN"
    data.image_size = 256
    data.num_classes = placeholder(int)

    model = config.model
    model.sigma_max = 378.0
    model.num_scales = 2000
    model.dropout = 0.0
    return config
