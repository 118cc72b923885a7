"""DDPM++ cont. (deep, sub-VP SDE) on CIFAR-10: 8 residual blocks per resolution, 950k
iterations; the paper's best likelihood.

    python main.py --config configs/subvp/cifar10_ddpmpp_deep_continuous.py --workdir W --mode train

Song et al. 2021: NLL 2.99 bits/dim and FID 2.92 with the probability-flow ODE (Table 2);
FID 2.41, IS 9.57 with the Euler-Maruyama predictor (Table 3). 106,632,579 parameters.
Bits/dim of the test set (uniformly dequantized, 5 passes): ``--mode eval
--config.eval.enable_bpd=True``.
"""

from configs.vp.cifar10_ddpmpp_deep_continuous import get_config as get_vp_config


def get_config():
    config = get_vp_config()
    config.training.sde = "subvpsde"
    return config
