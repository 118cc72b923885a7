"""2-D swissroll with the VP SDE and an MLP score network.

python main.py --config configs/toy/swissroll.py --mode train --workdir runs/toy_swissroll
python main.py --config configs/toy/swissroll.py --mode eval --workdir runs/toy_swissroll
"""

from configs.toy.default import get_default_config


def get_config():
    config = get_default_config()
    config.data.dataset = "swissroll"
    return config
