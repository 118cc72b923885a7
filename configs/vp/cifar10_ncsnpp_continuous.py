"""NCSN++ cont. with the VP SDE on CIFAR-10.

    python main.py --config configs/vp/cifar10_ncsnpp_continuous.py --workdir W --mode train

Paper result: — . 62,693,251 parameters.

DDPM++ (``vp/cifar10_ddpmpp_continuous.py``) with the two NCSN++ changes: FIR resampling and a
residual input pyramid; the time embedding stays sinusoidal.
"""

from configs.vp.cifar10_ddpmpp_continuous import get_config as get_ddpmpp_config


def get_config():
    config = get_ddpmpp_config()
    config.model.fir = True
    config.model.progressive_input = "residual"
    return config
