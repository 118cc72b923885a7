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
    # Objective: "dsm" (denoising, Eq. 7), "ism" (implicit), "ssm" / "ssm_vr" (sliced score
    # matching); the last three need only the score's Jacobian-vector products.
    training.loss = "dsm"
    training.ssm_num_projections = 1  # per example: ssm, ssm_vr projections; ism Hutchinson probes
    training.ssm_noise = "rademacher"  # projection law: "rademacher" | "gaussian"
    training.ism_exact_trace = False  # ism: exact trace costs one JVP per pixel; Hutchinson here
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
    sampling.batch_size = 64
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
    evaluate.probe_noise = "rademacher"  # Hutchinson probes: "rademacher" | "gaussian"
    evaluate.eps = 1e-5  # likelihood: the probability-flow ODE is integrated from t = eps to T
    evaluate.weights = "ema"  # "ema" (as the paper) | "raw": which parameters are evaluated
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
    # A file of the network's own noise levels (descending), used instead of the geometric
    # sigma_min ... sigma_max sequence: what `convert --noise_levels=checkpoint` writes.
    model.noise_levels = placeholder(str)
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

    # --mode train_classifier: the noise-conditional classifier p_t(y | x(t)) of class-conditional
    # sampling (--mode sample --config.sampling.task=class); checkpoints in workdir/classifier/.
    # 2,500 steps take about 10 minutes on a busy 2-core CPU with two host devices.
    config.classifier = classifier = ml_collections.ConfigDict()
    classifier.name = "small_cnn"  # "small_cnn" | "wide_resnet"
    classifier.channels = (16, 32, 64)  # small_cnn: channels of the three stages
    classifier.depth = 28  # wide_resnet: 6 n + 4 layers
    classifier.widen_factor = 10  # wide_resnet: width multiplier
    classifier.dropout = 0.0  # wide_resnet
    classifier.embed_dim = 64  # noise-level embedding (Fourier features of log sigma)
    classifier.fourier_scale = 16.0
    classifier.optimizer = "adam"
    classifier.lr = 1e-3
    classifier.warmup = 100
    classifier.grad_clip = 1.0
    classifier.weight_decay = 0.0
    classifier.ema_rate = 0.99  # sampling and held-out accuracy use the EMA parameters
    classifier.batch_size = 64
    classifier.n_iters = 2_500
    classifier.eps = 1e-5  # training times t ~ U(eps, T)
    classifier.log_freq = 50
    classifier.eval_freq = 500  # held-out accuracy every eval_freq steps (and at the end)
    classifier.eval_examples = 1_000  # first test images scored at each of eval_times
    classifier.eval_times = "0.0,0.1,0.25,0.5,0.75,1.0"  # fractions of T (0 means eps)
    classifier.snapshot_freq = 500
    classifier.workdir = placeholder(str)  # None: workdir/classifier
    classifier.compare_unconditional = False  # task "class": also score unconditional samples

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
