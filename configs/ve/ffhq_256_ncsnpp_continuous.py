"""NCSN++ cont. (VE SDE) on FFHQ 256x256: the network of ``church_ncsnpp_continuous.py`` with
sigma_max = 348.

    python main.py --config configs/ve/ffhq_256_ncsnpp_continuous.py --workdir W --mode train \
        --config.data.path=/path/to/ffhq-r08.tfrecords

The images come from a TFRecord file of 256x256 images in the StyleGAN layout
(``ffhq-r08.tfrecords``: one ``shape`` and one raw ``data`` feature per image; the original
config's ``tfrecords_path``): pass it with ``--config.data.path``.
Paper result: — . 65,574,549 parameters.
"""

from ml_collections.config_dict import placeholder

from configs.ve.church_ncsnpp_continuous import get_config as get_church_config


def get_config():
    config = get_church_config()
    data = config.data
    data.dataset = "FFHQ"
    data.category = placeholder(str)
    data.source = "tfrecord"
    data.image_size = 256
    config.model.sigma_max = 348.0
    return config
