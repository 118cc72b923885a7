"""2-D Gaussian mixture with the sub-VP SDE.

python main.py --config configs/toy/gmm_subvp.py --mode train --workdir runs/toy_gmm_subvp
python main.py --config configs/toy/gmm_subvp.py --mode eval --workdir runs/toy_gmm_subvp
"""

from configs.toy.default import get_default_config


def get_config():
    config = get_default_config()
    config.data.dataset = "gmm"
    config.training.sde = "subvpsde"
    return config
