"""NCSN++ cont. (deep) with the VP SDE on CIFAR-10: 8 residual blocks per resolution, 950k
iterations.

    python main.py --config configs/vp/cifar10_ncsnpp_deep_continuous.py --workdir W --mode train

Paper result: — . 107,521,411 parameters.
"""

from configs.vp.cifar10_ncsnpp_continuous import get_config as get_base_config


def get_config():
    config = get_base_config()
    config.training.n_iters = 950_001
    config.model.num_res_blocks = 8
    return config
