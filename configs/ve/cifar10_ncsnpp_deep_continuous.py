"""NCSN++ cont. (deep, VE SDE) on CIFAR-10: 8 residual blocks per resolution, 950k iterations.

    python main.py --config configs/ve/cifar10_ncsnpp_deep_continuous.py --workdir W --mode train

Song et al. 2021, Table 3: FID 2.20, IS 9.89, the paper's best sample quality (PC sampler:
reverse diffusion + Langevin, snr 0.16). 107,587,075 parameters.
"""

from configs.ve.cifar10_ncsnpp_continuous import get_config as get_base_config


def get_config():
    config = get_base_config()
    config.training.n_iters = 950_001
    config.model.num_res_blocks = 8
    return config
