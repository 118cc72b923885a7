"""NCSN++ cont. (VE SDE) on CelebA-HQ 256x256: the network of ``church_ncsnpp_continuous.py``
with sigma_max = 348.

    python main.py --config configs/ve/celebahq_256_ncsnpp_continuous.py --workdir W --mode train \
        --config.data.path=/path/to/celebahq-r08.tfrecords

The images come from a TFRecord file of 256x256 images in the Progressive GAN / StyleGAN layout
(``-r08.tfrecords``: one ``shape`` and one raw ``data`` feature per image; the original
config's ``tfrecords_path``): pass it with ``--config.data.path``.
Paper result: — (samples only). 65,574,549 parameters.
"""

from configs.ve.ffhq_256_ncsnpp_continuous import get_config as get_ffhq_config


def get_config():
    config = get_ffhq_config()
    config.data.dataset = "CelebAHQ"
    return config
