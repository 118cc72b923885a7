"""NCSN++ cont. (VE SDE) on LSUN bedroom 256x256: the network of ``church_ncsnpp_continuous.py``
with sigma_max = 378.

    python main.py --config configs/ve/bedroom_ncsnpp_continuous.py --workdir W --mode train

Paper result: — (samples only). 65,574,549 parameters.
"""

from configs.ve.church_ncsnpp_continuous import get_config as get_church_config


def get_config():
    config = get_church_config()
    config.data.category = "bedroom"
    config.model.sigma_max = 378.0
    return config
