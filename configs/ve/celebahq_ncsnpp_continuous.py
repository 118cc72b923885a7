"""NCSN++ cont. (VE SDE) on CelebA-HQ 1024x1024: the network of ``ffhq_ncsnpp_continuous.py``,
trained with the summed (not averaged) loss.

    python main.py --config configs/ve/celebahq_ncsnpp_continuous.py --workdir W --mode train \
        --config.data.path=/path/to/celebahq-r10.tfrecords

The images come from a TFRecord file of 1024x1024 images (``-r10.tfrecords``; the original
config's ``tfrecords_path``): pass it with ``--config.data.path``. Paper result: — (the
1024-pixel CelebA-HQ samples of Song et al. 2021). 105,785,896 parameters.
"""

from configs.ve.ffhq_ncsnpp_continuous import get_config as get_ffhq_config


def get_config():
    config = get_ffhq_config()
    config.training.reduce_mean = False
    config.data.dataset = "CelebAHQ"
    return config
