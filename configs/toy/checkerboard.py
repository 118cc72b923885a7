"""2-D checkerboard with the VP SDE and an MLP score network.

python main.py --config configs/toy/checkerboard.py --mode train --workdir runs/toy_checkerboard
python main.py --config configs/toy/checkerboard.py --mode eval --workdir runs/toy_checkerboard
"""

from configs.toy.default import get_default_config


def get_config():
    config = get_default_config()
    config.data.dataset = "checkerboard"
    return config
