"""NCSN on CIFAR-10 with NCSNv2's techniques 1, 2, 4 and 5: ``cifar10_124`` plus an EMA of the
weights (rate 0.999).

    python main.py --config configs/ve/ncsn/cifar10_1245.py --workdir W --mode train

Paper result: — . 39,750,659 parameters.
"""

from configs.ve.ncsn.cifar10_124 import get_config as get_124_config


def get_config():
    config = get_124_config()
    config.model.ema_rate = 0.999
    return config
