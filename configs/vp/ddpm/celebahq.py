"""DDPM (Ho et al. 2020) on CelebA-HQ 256x256: ``vp/ddpm/church.py`` on faces.

    python main.py --config configs/vp/ddpm/celebahq.py --workdir W --mode train \
        --config.data.path=/path/to/celebahq-r08.tfrecords

The images come from a TFRecord file of 256x256 images (``-r08.tfrecords``): pass it with
``--config.data.path``. TFRecord images are not resized, so the file must hold 256-pixel images
(the original config pointed at the 1024-pixel ``-r10`` file). Paper result: — .
111,569,923 parameters.
"""

from ml_collections.config_dict import placeholder

from configs.vp.ddpm.church import get_config as get_church_config


def get_config():
    config = get_church_config()
    data = config.data
    data.dataset = "CelebAHQ"
    data.category = placeholder(str)
    data.source = "tfrecord"
    data.image_size = 256
    return config
