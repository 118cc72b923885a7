"""DDPM++ cont. (deep, VP SDE) on CIFAR-10: 8 residual blocks per resolution, 950k iterations.

    python main.py --config configs/vp/cifar10_ddpmpp_deep_continuous.py --workdir W --mode train

Song et al. 2021: FID 2.41, IS 9.68 (Table 3; Euler-Maruyama predictor); NLL 3.13 bits/dim and
FID 3.08 with the probability-flow ODE (Table 2). 106,632,579 parameters.
"""

from configs.vp.cifar10_ddpmpp_continuous import get_config as get_base_config


def get_config():
    config = get_base_config()
    config.training.n_iters = 950_001
    config.model.num_res_blocks = 8
    return config
