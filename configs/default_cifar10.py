"""Shared defaults of the CIFAR-10 experiments (the paper's hyperparameters, Appendix H).

Every file under ``configs/ve``, ``configs/vp`` and ``configs/subvp`` starts from
:func:`get_default_configs` and sets its SDE, sampler and network.
"""

import ml_collections
from ml_collections.config_dict import placeholder


def get_default_configs() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.seed = 42
    config.num_devices = placeholder(int)  # None: all visible devices

    config.training = training = ml_collections.ConfigDict()
    training.sde = "vesde"
    training.batch_size = 128
    training.n_iters = 1_300_001
    training.n_jitted_steps = 1
    training.snapshot_freq = 50_000
    training.log_freq = 50
    training.eval_freq = 100
    training.snapshot_freq_for_preemption = 10_000
    training.snapshot_sampling = True
    training.snapshot_samples = 64
    training.likelihood_weighting = False
    training.importance_sampling = False
    training.continuous = True
    training.reduce_mean = False
    training.max_to_keep = 3
    training.progress_bar = True

    config.sampling = sampling = ml_collections.ConfigDict()
    sampling.method = "pc"
    sampling.predictor = "reverse_diffusion"
    sampling.corrector = "langevin"
    sampling.n_steps_each = 1
    sampling.noise_removal = True
    sampling.probability_flow = False
    sampling.snr = 0.16
    sampling.eps = 1e-3
    sampling.num_steps = placeholder(int)  # None: the SDE's N
    sampling.ode_solver = "tsit5"
    sampling.rtol = 1e-5
    sampling.atol = 1e-5
    sampling.batch_size = 64  # --mode sample: how many samples in the grid

    config.eval = evaluate = ml_collections.ConfigDict()
    evaluate.begin_ckpt = 9
    evaluate.end_ckpt = 26
    evaluate.batch_size = 1024
    evaluate.enable_sampling = False
    evaluate.num_samples = 50_000
    evaluate.enable_loss = True
    evaluate.enable_bpd = False
    evaluate.bpd_dataset = "test"

    config.data = data = ml_collections.ConfigDict()
    data.dataset_kind = "image"
    data.dataset = "CIFAR10"
    data.image_size = 32
    data.random_flip = True
    data.centered = False
    data.uniform_dequantization = False
    data.num_channels = 3

    config.model = model = ml_collections.ConfigDict()
    model.sigma_min = 0.01
    model.sigma_max = 50.0
    model.num_scales = 1000
    model.beta_min = 0.1
    model.beta_max = 20.0
    model.dropout = 0.1
    model.embedding_type = "fourier"
    model.dtype = "float32"  # "bfloat16": bf16 compute, float32 parameters and score arithmetic

    config.optim = optim = ml_collections.ConfigDict()
    optim.weight_decay = 0.0
    optim.optimizer = "adam"
    optim.lr = 2e-4
    optim.beta1 = 0.9
    optim.eps = 1e-8
    optim.warmup = 5000
    optim.grad_clip = 1.0
    return config
