"""Defaults shared by every experiment config, at the values of the paper's CIFAR-10 configs.

:func:`defaults` holds the fields of every experiment; :func:`image_defaults` adds those of the
image experiments (the CIFAR-10 data, checkpoint sweeps, sample metrics, the classifier). The
per-dataset defaults (``default_celeba.py``, ``default_lsun.py``, ``mnist/default.py``,
``toy/default.py``) start from one of them and change what differs; :func:`ncsnpp` and
:func:`ncsn` set the network blocks that several experiments share.

Fields that may stay unset are ``placeholder(type)`` fields: they read as None, and can still be
set from the command line, e.g. ``--config.data.path=/data/cifar10``.
"""

import ml_collections
from ml_collections.config_dict import placeholder


def defaults() -> ml_collections.ConfigDict:
    """The fields of every experiment (SDE, training, sampling, likelihood, optimizer, latent)."""
    config = ml_collections.ConfigDict()
    config.seed = 42
    config.num_devices = placeholder(int)  # None: all visible devices

    config.training = training = ml_collections.ConfigDict()
    training.sde = "vesde"  # "vesde" | "vpsde" | "subvpsde"; each experiment sets it
    training.batch_size = 128
    training.n_iters = 1_300_001
    # Optimizer steps per compiled call (lax.scan over stacked batches). The original used 5;
    # every extra step keeps one more batch on the device, so 1 is the safe default.
    training.n_jitted_steps = 1
    training.snapshot_freq = 50_000  # kept snapshots, the ones evaluation reads
    training.log_freq = 50
    training.eval_freq = 100  # loss on a test batch
    training.snapshot_freq_for_preemption = 10_000  # a separate, rolling checkpoint to resume from
    training.snapshot_sampling = True  # draw samples at every snapshot
    training.snapshot_samples = 64
    training.max_to_keep = placeholder(int)  # snapshots kept; None keeps all, as in the original
    training.progress_bar = True
    training.likelihood_weighting = False
    training.importance_sampling = False
    training.continuous = True
    training.reduce_mean = False
    # Objective: "dsm" (denoising, Eq. 7), "ism" (implicit), "ssm" / "ssm_vr" (sliced score
    # matching); the last three need only the score's Jacobian-vector products.
    training.loss = "dsm"
    training.ssm_num_projections = 1  # per example: ssm, ssm_vr projections; ism Hutchinson probes
    training.ssm_noise = "rademacher"  # projection law: "rademacher" | "gaussian"
    training.ism_exact_trace = False  # ism: exact trace costs one JVP per pixel; Hutchinson here

    config.sampling = sampling = ml_collections.ConfigDict()
    # "pc" | "ode" | "edm" | "dpm_solver_pp" | "dpm_solver" | "dpm_solver_adaptive" |
    # "sde_adaptive" | "langevin" | "annealed_langevin"
    sampling.method = "pc"
    sampling.predictor = "reverse_diffusion"
    sampling.corrector = "langevin"
    sampling.snr = 0.16
    sampling.n_steps_each = 1
    sampling.noise_removal = True
    sampling.probability_flow = False  # PC predictor steps along the probability-flow ODE
    # Smallest time of the sampler: the original used 1e-3 for VP/sub-VP and 1e-5 for VE (the
    # VE files set it).
    sampling.eps = 1e-3
    sampling.num_steps = placeholder(int)  # None: the SDE's N
    sampling.edm_churn = 0.0  # method "edm": stochastic churn (0: deterministic Heun)
    # "dpm_solver_pp": 1 (DDIM), 2 (2M), 3 (3M); "dpm_solver": DPM-Solver-1/2/3 (num_steps is
    # the NFE budget); "dpm_solver_adaptive": 2 (DPM-Solver-12) or 3 (DPM-Solver-23)
    sampling.dpm_order = 2
    sampling.dpm_rtol = 0.05  # "dpm_solver_adaptive" tolerances (Lu et al. 2022: 0.05, and
    sampling.dpm_atol = 0.0078  # 0.0078 for data in [-1, 1]; scale atol with the data)
    sampling.sde_rtol = 0.05  # "sde_adaptive": reverse-SDE step-size controller tolerances
    sampling.sde_atol = 0.05  # (0.05 matched 1000-step PC on the mixtures of BENCHMARKS.md)
    # Methods "annealed_langevin" / "langevin": NCSN's L levels x T steps with alpha_i =
    # step_size sigma_i^2 / sigma_L^2 (Song & Ermon 2019: 2e-5, 100, 10); plain Langevin runs
    # L x T steps at t = eps.
    sampling.langevin_step_size = 2e-5
    sampling.langevin_steps_each = 100
    sampling.langevin_num_levels = 10
    sampling.ode_solver = "tsit5"
    sampling.rtol = 1e-5
    sampling.atol = 1e-5
    sampling.batch_size = 64  # --mode sample: how many samples in the grid
    sampling.task = "generate"  # "generate" | "class" | "inpaint" | "colorize"
    sampling.label = placeholder(int)  # task "class": the class to sample
    # Tasks "inpaint" and "colorize" (scoresde_jax.modes.tasks), with the PC sampler options above.
    sampling.task_inputs = placeholder(str)  # .npz, image file or folder; None: the dataset
    sampling.task_split = "test"  # dataset split the inputs come from when task_inputs is None
    sampling.num_inputs = 8  # how many input images (the first ones)
    sampling.num_completions = 4  # samples per input
    sampling.inpaint_mask = "center_square"  # the missing region: a MASK_KINDS kind or a .png
    sampling.perturb_known_init = False  # start the known part from p_T(x | data), not the data
    sampling.classifier_scale = 1.0  # task "class": weight of grad log p_t(y | x) in the score

    config.eval = evaluate = ml_collections.ConfigDict()
    evaluate.batch_size = 1024
    evaluate.num_samples = 50_000
    evaluate.ode_solver = "dopri5"  # bits/dim: probability-flow ODE solver and tolerances
    evaluate.rtol = 1e-5
    evaluate.atol = 1e-5
    evaluate.exact_trace = False  # Hutchinson estimate of the divergence
    evaluate.num_probes = 1
    evaluate.probe_noise = "rademacher"  # Hutchinson probes: "rademacher" | "gaussian"
    evaluate.eps = 1e-5  # likelihood: the probability-flow ODE is integrated from t = eps to T
    evaluate.weights = "ema"  # "ema" (as the paper) | "raw": which parameters are evaluated

    config.model = model = ml_collections.ConfigDict()
    model.sigma_min = 0.01
    model.sigma_max = 50.0
    model.num_scales = 1000
    model.beta_min = 0.1
    model.beta_max = 20.0

    config.optim = optim = ml_collections.ConfigDict()
    optim.optimizer = "adam"
    optim.lr = 2e-4
    optim.beta1 = 0.9
    optim.eps = 1e-8
    optim.weight_decay = 0.0
    optim.warmup = 5000
    optim.grad_clip = 1.0

    # --mode encode | interpolate | temperature: probability-flow latent manipulation (paper,
    # Section 4.3); pictures and reports go to workdir/latent/.
    config.latent = latent = ml_collections.ConfigDict()
    latent.num_inputs = 16  # encode: examples; temperature: samples per temperature
    latent.num_pairs = 8  # interpolate: pairs of examples (rows)
    latent.num_interpolation_steps = 9  # points per interpolation path, endpoints included
    latent.temperatures = "0.0,0.5,0.75,1.0,1.25"  # comma-separated prior-noise scales (rows)
    latent.split = "test"  # "test" | "train": where the encoded examples come from
    latent.batch_size = 64  # examples per sharded call (rounded up to the device count)
    latent.ode_solver = "tsit5"  # probability-flow ODE solver and tolerances (eps: sampling.eps)
    latent.rtol = 1e-5
    latent.atol = 1e-5
    return config


def image_defaults() -> ml_collections.ConfigDict:
    """:func:`defaults` with the fields of image experiments, for CIFAR-10: every CIFAR-10 file
    under ``configs/ve``, ``configs/vp`` and ``configs/subvp`` sets its SDE, sampler and network.
    """
    config = defaults()

    evaluate = config.eval
    # Which checkpoints --mode eval reads: "latest", "all", a comma-separated list of steps, or
    # "snapshots": snapshot k * training.snapshot_freq for begin_ckpt <= k <= end_ckpt (the
    # original's sweep, over which the paper reports the best FID).
    evaluate.checkpoints = "latest"
    evaluate.begin_ckpt = 9
    evaluate.end_ckpt = 26
    evaluate.enable_loss = True
    evaluate.enable_bpd = False
    evaluate.bpd_dataset = "test"  # "test" | "train" (comma-separated for both)
    # Passes over the split, each with fresh dequantization and Hutchinson noise; the original
    # made 5 over the test split (and 1 over the training split).
    evaluate.num_repeats = 5
    evaluate.enable_sampling = False
    evaluate.max_examples = placeholder(int)  # None: the whole split
    evaluate.fid_stats_path = placeholder(str)  # reference Inception statistics (.npz)
    evaluate.inception_weights = placeholder(str)  # Inception-v3 weights for FID/IS/KID
    evaluate.inception_batch_size = 200  # images per Inception call
    evaluate.kid_features = 10_000  # pool_3 features kept for KID (samples and --mode stats)
    evaluate.stats_split = "train"  # --mode stats: the split whose statistics are computed

    config.data = data = ml_collections.ConfigDict()
    data.dataset_kind = "image"
    data.dataset = "CIFAR10"
    data.category = placeholder(str)  # LSUN: "church_outdoor" | "bedroom"
    # Where images come from: auto | tfds | npz | mnist_idx | cifar10_python | folder | tfrecord.
    data.source = "auto"
    data.path = placeholder(str)  # local copy of the data (file or folder, see data.source)
    data.data_dir = placeholder(str)  # TFDS data directory
    data.image_size = 32
    data.num_channels = 3
    data.num_classes = 10
    data.random_flip = True
    data.centered = False  # False: pixels in [0, 1]; True: [-1, 1]
    data.uniform_dequantization = False
    data.num_workers = placeholder(int)  # input threads (None: one per 2 cores, 1 to 4)

    model = config.model
    # A file of the network's own noise levels (descending), used instead of the geometric
    # sigma_min ... sigma_max sequence: what `convert --noise_levels=checkpoint` writes.
    model.noise_levels = placeholder(str)
    model.dropout = 0.1
    model.embedding_type = "fourier"
    model.dtype = "float32"  # "bfloat16": bf16 compute, float32 parameters and score arithmetic

    # --mode train_classifier: the noise-conditional classifier p_t(y | x(t)) of class-conditional
    # sampling (--mode sample --config.sampling.task=class); checkpoints in workdir/classifier/.
    # The paper's WRN-28-10 conditioned on log sigma (Appendix I.1). The paper does not state its
    # training hyperparameters; the optimizer settings below are this project's choice.
    config.classifier = classifier = ml_collections.ConfigDict()
    classifier.name = "wide_resnet"  # "wide_resnet" | "small_cnn"
    classifier.channels = (32, 64, 128)  # small_cnn: channels of the three stages
    classifier.depth = 28  # wide_resnet: 6 n + 4 layers
    classifier.widen_factor = 10  # wide_resnet: width multiplier (160/320/640 channels)
    classifier.dropout = 0.0  # wide_resnet
    classifier.embed_dim = 128  # noise-level embedding (Fourier features of log sigma)
    classifier.fourier_scale = 16.0
    classifier.optimizer = "adam"
    classifier.lr = 2e-4
    classifier.warmup = 1_000
    classifier.grad_clip = 1.0
    classifier.weight_decay = 0.0
    classifier.ema_rate = 0.999  # sampling and held-out accuracy use the EMA parameters
    classifier.batch_size = 128
    classifier.n_iters = 200_000
    classifier.eps = 1e-5  # training times t ~ U(eps, T)
    classifier.log_freq = 100
    classifier.eval_freq = 5_000  # held-out accuracy every eval_freq steps (and at the end)
    classifier.eval_examples = 10_000  # first test images scored at each of eval_times
    classifier.eval_times = "0.0,0.1,0.25,0.5,0.75,1.0"  # fractions of T (0 means eps)
    classifier.snapshot_freq = 10_000
    classifier.workdir = placeholder(str)  # None: workdir/classifier
    classifier.compare_unconditional = False  # task "class": also score unconditional samples
    return config


def ncsnpp(model: ml_collections.ConfigDict) -> None:
    """Sets ``model`` to NCSN++ as in the paper's CIFAR-10 configs: FIR up/downsampling, BigGAN
    residual blocks with rescaled skips, a residual input pyramid, Fourier features of the noise
    level. DDPM++ is this with ``fir=False``, ``progressive_input="none"`` and positional
    embeddings."""
    model.name = "ncsnpp"
    model.nonlinearity = "swish"
    model.nf = 128
    model.ch_mult = (1, 2, 2, 2)
    model.num_res_blocks = 4
    model.attn_resolutions = (16,)
    model.resamp_with_conv = True
    model.conditional = True
    model.fir = True
    model.fir_kernel = (1, 3, 3, 1)
    model.skip_rescale = True
    model.resblock_type = "biggan"
    model.progressive = "none"
    model.progressive_input = "residual"
    model.progressive_combine = "sum"
    model.attention_type = "ddpm"
    model.embedding_type = "fourier"
    model.init_scale = 0.0
    model.fourier_scale = 16
    model.conv_size = 3


def ddpm(model: ml_collections.ConfigDict) -> None:
    """Sets ``model`` to the DDPM network of Ho et al. 2020 at CIFAR-10 size."""
    model.name = "ddpm"
    model.nonlinearity = "swish"
    model.nf = 128
    model.ch_mult = (1, 2, 2, 2)
    model.num_res_blocks = 2
    model.attn_resolutions = (16,)
    model.resamp_with_conv = True
    model.conditional = True


def ncsn(config: ml_collections.ConfigDict, name: str, lr: float) -> None:
    """Sets ``config`` up as Song & Ermon's NCSN (``name="ncsn"``) or NCSNv2 (``"ncsnv2_*"``):
    the RefineNet, discrete VE noise levels, annealed Langevin sampling, and Adam with neither
    warmup nor gradient clipping, as in the originals. Each file sets the levels and steps."""
    config.training.sde = "vesde"
    config.training.continuous = False

    sampling = config.sampling
    sampling.method = "pc"
    sampling.predictor = "none"
    sampling.corrector = "ald"
    sampling.eps = 1e-5

    model = config.model
    model.name = name
    model.nonlinearity = "elu"
    model.nf = 128
    model.interpolation = "bilinear"

    optim = config.optim
    optim.optimizer = "adam"
    optim.lr = lr
    optim.beta1 = 0.9
    optim.eps = 1e-8
    optim.weight_decay = 0.0
    optim.warmup = 0
    optim.grad_clip = -1.0  # no clipping
