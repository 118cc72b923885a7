"""Shared defaults of the MNIST experiments: small NCSN++/DDPM++ networks that train to
recognizable digits on a laptop CPU.

MNIST comes from TFDS (``tfds build mnist --file_format=array_record`` on a machine with
internet) or, with no network and no TensorFlow, from the four original IDX files
(``train-images-idx3-ubyte.gz`` ...) in a directory given as ``--config.data.path=DIR``.
"""

import ml_collections

from configs import common


def get_default_configs() -> ml_collections.ConfigDict:
    config = common.image_defaults()

    training = config.training
    training.sde = "vpsde"
    training.reduce_mean = True
    training.batch_size = 64
    training.n_iters = 3_000
    training.log_freq = 100
    training.eval_freq = 500
    training.snapshot_freq = 1_000  # kept checkpoints and sample grids
    training.snapshot_freq_for_preemption = 500

    sampling = config.sampling
    sampling.predictor = "euler_maruyama"
    sampling.corrector = "none"
    sampling.num_steps = 500  # reverse-SDE steps (the SDE's N is 1000)

    evaluate = config.eval
    evaluate.begin_ckpt = 1
    evaluate.end_ckpt = 3
    evaluate.batch_size = 256
    evaluate.num_repeats = 1
    evaluate.num_samples = 1_024

    data = config.data
    data.dataset = "MNIST"
    data.image_size = 28
    data.num_channels = 1
    data.random_flip = False  # digits are not mirror-symmetric
    data.centered = True

    model = config.model
    common.ncsnpp(model)
    model.ema_rate = 0.995  # short runs: the average must forget the initial weights quickly
    model.scale_by_sigma = False
    model.nf = 16
    model.ch_mult = (1, 2, 2)  # 28 -> 14 -> 7
    model.num_res_blocks = 1
    model.attn_resolutions = (7,)
    model.fir = False
    model.progressive_input = "none"
    model.embedding_type = "positional"

    optim = config.optim
    optim.lr = 1e-3
    optim.warmup = 500

    # 2,500 classifier steps take about 10 minutes on a busy 2-core CPU with two host devices.
    classifier = config.classifier
    classifier.name = "small_cnn"
    classifier.channels = (16, 32, 64)
    classifier.embed_dim = 64
    classifier.lr = 1e-3
    classifier.warmup = 100
    classifier.ema_rate = 0.99
    classifier.batch_size = 64
    classifier.n_iters = 2_500
    classifier.log_freq = 50
    classifier.eval_freq = 500
    classifier.eval_examples = 1_000
    classifier.snapshot_freq = 500
    return config
