"""2-D moons with the VP SDE and an MLP score network.

python main.py --config configs/toy/moons.py --mode train --workdir runs/toy_moons
python main.py --config configs/toy/moons.py --mode eval --workdir runs/toy_moons
"""

from configs.toy.default import get_default_config


def get_config():
    config = get_default_config()
    config.data.dataset = "moons"
    return config
