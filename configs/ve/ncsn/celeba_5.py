"""NCSN on CelebA 64x64 with NCSNv2's technique 5 only: an EMA of the weights (rate 0.999).

    python main.py --config configs/ve/ncsn/celeba_5.py --workdir W --mode train

Paper result: — . 30,117,635 parameters.
"""

from configs.ve.ncsn.celeba import get_config as get_ncsn_config


def get_config():
    config = get_ncsn_config()
    config.model.ema_rate = 0.999
    return config
