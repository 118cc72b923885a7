"""2-D gmm with the VP SDE and an MLP score network.

python main.py --config configs/toy/gmm.py --mode train --workdir runs/toy_gmm
python main.py --config configs/toy/gmm.py --mode eval --workdir runs/toy_gmm
"""

from configs.toy.default import get_default_config


def get_config():
    config = get_default_config()
    config.data.dataset = "gmm"
    return config
