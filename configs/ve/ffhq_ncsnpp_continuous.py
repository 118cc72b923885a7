"""NCSN++ cont. (VE SDE) on FFHQ 1024x1024: eight resolutions with nf = 16 and channel
multipliers up to 32, one residual block each, 2,000 noise scales up to sigma_max = 1348,
batch 8, EMA 0.9999, snr 0.15.

    python main.py --config configs/ve/ffhq_ncsnpp_continuous.py --workdir W --mode train \
        --config.data.path=/path/to/ffhq-r10.tfrecords

The images come from a TFRecord file of 1024x1024 images (``ffhq-r10.tfrecords``; the original
config's ``tfrecords_path``): pass it with ``--config.data.path``. Paper result: — (samples
only). 105,785,896 parameters.
"""

from configs.ve.ffhq_256_ncsnpp_continuous import get_config as get_ffhq_256_config


def get_config():
    config = get_ffhq_256_config()
    config.training.batch_size = 8
    config.training.reduce_mean = True

    config.sampling.snr = 0.15

    evaluate = config.eval
    evaluate.begin_ckpt = 1
    evaluate.end_ckpt = 96
    evaluate.batch_size = 1024

    config.data.image_size = 1024

    model = config.model
    model.sigma_max = 1348.0
    model.num_scales = 2000
    model.ema_rate = 0.9999
    model.nf = 16
    model.ch_mult = (1, 2, 4, 8, 16, 32, 32, 32)
    model.num_res_blocks = 1
    model.dropout = 0.0
    return config
