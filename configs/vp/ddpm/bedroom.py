"""DDPM (Ho et al. 2020) on LSUN bedroom 256x256: ``vp/ddpm/church.py`` on bedrooms.

    python main.py --config configs/vp/ddpm/bedroom.py --workdir W --mode train

Paper result: — . 111,569,923 parameters.
"""

from configs.vp.ddpm.church import get_config as get_church_config


def get_config():
    config = get_church_config()
    config.data.category = "bedroom"
    return config
