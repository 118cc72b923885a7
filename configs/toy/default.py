"""Shared defaults of the 2-D toy experiments (an MLP score network, trained on a CPU in minutes).

Each file beside this one imports :func:`get_default_config` and changes a few fields.
"""

import ml_collections
from ml_collections.config_dict import placeholder


def get_default_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.seed = 42
    config.num_devices = placeholder(int)  # None: all visible devices

    config.training = training = ml_collections.ConfigDict()
    training.sde = "vpsde"
    training.continuous = True
    training.reduce_mean = True
    training.likelihood_weighting = False
    training.importance_sampling = False
    training.batch_size = 512
    training.n_iters = 20_000
    training.n_jitted_steps = 100  # optimizer steps per compiled call (lax.scan)
    training.log_freq = 500
    training.snapshot_freq = 5_000  # kept checkpoints (and sample pictures)
    training.snapshot_freq_for_preemption = 1_000  # the newest 2 of these are kept
    training.eval_freq = 1_000  # loss on a held-out batch, logged
    training.snapshot_samples = 2_000
    training.snapshot_sampling = True
    training.max_to_keep = 3
    training.progress_bar = True

    config.sampling = sampling = ml_collections.ConfigDict()
    sampling.method = "pc"
    sampling.predictor = "euler_maruyama"
    sampling.corrector = "none"
    sampling.snr = 0.16
    sampling.n_steps_each = 1
    sampling.noise_removal = True
    sampling.probability_flow = False  # PC predictor steps along the probability-flow ODE
    sampling.eps = 1e-3
    sampling.num_steps = placeholder(int)  # None: the SDE's N
    sampling.edm_churn = 0.0  # method "edm": stochastic churn (0: deterministic Heun)
    sampling.dpm_order = 2  # method "dpm_solver_pp": 1 (DDIM) or 2 (2M)
    sampling.ode_solver = "tsit5"
    sampling.rtol = 1e-5
    sampling.atol = 1e-5
    sampling.batch_size = 2_000  # --mode sample: number of points in the scatter plot
    sampling.task = "generate"  # "generate" | "class" | "inpaint" | "colorize"
    sampling.label = placeholder(int)  # task "class": the class to sample

    config.eval = evaluate = ml_collections.ConfigDict()
    evaluate.batch_size = 1_000
    evaluate.num_samples = 5_000
    evaluate.exact_trace = True  # 2-D: the exact divergence costs two JVPs
    evaluate.num_probes = 1
    evaluate.rtol = 1e-5
    evaluate.atol = 1e-5
    evaluate.ode_solver = "tsit5"

    config.data = data = ml_collections.ConfigDict()
    data.dataset_kind = "toy"
    data.dataset = "gmm"
    data.dim = 2
    data.n_train = 50_000
    data.n_test = 5_000
    data.seed = 0

    config.model = model = ml_collections.ConfigDict()
    model.name = "mlp"
    model.hidden = (256, 256, 256)
    model.embedding = "positional"
    model.embed_dim = 64
    model.fourier_scale = 16.0
    model.scale_by_sigma = False
    model.ema_rate = 0.999
    model.sigma_min = 0.01
    model.sigma_max = 4.0  # about the largest distance between two training points
    model.beta_min = 0.1
    model.beta_max = 20.0
    model.num_scales = 1000

    config.optim = optim = ml_collections.ConfigDict()
    optim.optimizer = "adam"
    optim.lr = 1e-3
    optim.beta1 = 0.9
    optim.eps = 1e-8
    optim.warmup = 500
    optim.grad_clip = 1.0
    optim.weight_decay = 0.0
    return config
