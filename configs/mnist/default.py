"""Shared defaults of the MNIST experiments: small NCSN++/DDPM++ networks that train to
recognizable digits on a laptop CPU.

MNIST comes from TFDS (``tfds build mnist --file_format=array_record`` on a machine with
internet) or, with no network and no TensorFlow, from the four original IDX files
(``train-images-idx3-ubyte.gz`` ...) in a directory given as ``--config.data.path=DIR``.
"""

import ml_collections
from ml_collections.config_dict import placeholder


def get_default_configs() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.seed = 42
    config.num_devices = placeholder(int)  # None: all visible devices

    config.training = training = ml_collections.ConfigDict()
    training.sde = "vpsde"
    training.continuous = True
    training.reduce_mean = True
    training.likelihood_weighting = False
    training.importance_sampling = False
    training.batch_size = 64
    training.n_iters = 3_000
    training.n_jitted_steps = 1
    training.log_freq = 100
    training.eval_freq = 500
    training.snapshot_freq = 1_000  # kept checkpoints and sample grids
    training.snapshot_freq_for_preemption = 500
    training.snapshot_sampling = True
    training.snapshot_samples = 64
    training.max_to_keep = placeholder(int)  # None: keep every snapshot
    training.progress_bar = True

    config.sampling = sampling = ml_collections.ConfigDict()
    sampling.method = "pc"
    sampling.predictor = "euler_maruyama"
    sampling.corrector = "none"
    sampling.snr = 0.16
    sampling.n_steps_each = 1
    sampling.noise_removal = True
    sampling.probability_flow = False
    sampling.eps = 1e-3
    sampling.num_steps = 500  # reverse-SDE steps (the SDE's N is 1000)
    sampling.edm_churn = 0.0  # method "edm": stochastic churn (0: deterministic Heun)
    sampling.dpm_order = 2  # method "dpm_solver_pp": 1 (DDIM) or 2 (2M)
    sampling.ode_solver = "tsit5"
    sampling.rtol = 1e-5
    sampling.atol = 1e-5
    sampling.batch_size = 64
    sampling.task = "generate"  # "generate" | "class" | "inpaint" | "colorize"
    sampling.label = placeholder(int)  # task "class": the class to sample

    config.eval = evaluate = ml_collections.ConfigDict()
    evaluate.checkpoints = "latest"  # "latest", "all", "snapshots" or "step,step,..."
    evaluate.begin_ckpt = 1
    evaluate.end_ckpt = 3
    evaluate.batch_size = 256
    evaluate.enable_loss = True
    evaluate.enable_bpd = False
    evaluate.bpd_dataset = "test"
    evaluate.num_repeats = 1
    evaluate.enable_sampling = False
    evaluate.num_samples = 1_024
    evaluate.max_examples = placeholder(int)  # None: the whole split
    evaluate.exact_trace = False
    evaluate.num_probes = 1
    evaluate.rtol = 1e-5
    evaluate.atol = 1e-5
    evaluate.ode_solver = "tsit5"
    evaluate.fid_stats_path = placeholder(str)
    evaluate.inception_weights = placeholder(str)
    evaluate.inception_batch_size = 200  # images per Inception call
    evaluate.kid_features = 10_000  # pool_3 features kept for KID (samples and --mode stats)
    evaluate.stats_split = "train"  # --mode stats: the split whose statistics are computed

    config.data = data = ml_collections.ConfigDict()
    data.dataset_kind = "image"
    data.dataset = "MNIST"
    data.image_size = 28
    data.num_channels = 1
    data.random_flip = False  # digits are not mirror-symmetric
    data.centered = True
    data.uniform_dequantization = False
    data.num_classes = 10
    data.source = "auto"  # auto | tfds | npz | mnist_idx | cifar10_python | folder | tfrecord
    data.path = placeholder(str)  # a directory with the MNIST IDX files, for example
    data.data_dir = placeholder(str)  # TFDS data directory
    data.category = placeholder(str)

    config.model = model = ml_collections.ConfigDict()
    model.name = "ncsnpp"
    model.sigma_min = 0.01
    model.sigma_max = 50.0
    model.beta_min = 0.1
    model.beta_max = 20.0
    model.num_scales = 1000
    model.ema_rate = 0.995  # short runs: the average must forget the initial weights quickly
    model.dropout = 0.1
    model.scale_by_sigma = False
    model.normalization = "GroupNorm"
    model.nonlinearity = "swish"
    model.nf = 16
    model.ch_mult = (1, 2, 2)  # 28 -> 14 -> 7
    model.num_res_blocks = 1
    model.attn_resolutions = (7,)
    model.resamp_with_conv = True
    model.conditional = True
    model.fir = False
    model.fir_kernel = (1, 3, 3, 1)
    model.skip_rescale = True
    model.resblock_type = "biggan"
    model.progressive = "none"
    model.progressive_input = "none"
    model.progressive_combine = "sum"
    model.attention_type = "ddpm"
    model.embedding_type = "positional"
    model.fourier_scale = 16
    model.init_scale = 0.0
    model.conv_size = 3
    model.dtype = "float32"

    config.optim = optim = ml_collections.ConfigDict()
    optim.optimizer = "adam"
    optim.lr = 1e-3
    optim.beta1 = 0.9
    optim.eps = 1e-8
    optim.warmup = 500
    optim.grad_clip = 1.0
    optim.weight_decay = 0.0
    return config
