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
    # Objective: "dsm" (denoising, Eq. 7), "ism" (implicit), "ssm" / "ssm_vr" (sliced score
    # matching); the last three need only the score's Jacobian-vector products.
    training.loss = "dsm"
    training.ssm_num_projections = 1  # per example: ssm, ssm_vr projections; ism Hutchinson probes
    training.ssm_noise = "rademacher"  # projection law: "rademacher" | "gaussian"
    training.ism_exact_trace = True  # ism: exact Jacobian trace (two JVPs in 2-D) or Hutchinson
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
    # "dpm_solver_pp": 1 (DDIM), 2 (2M), 3 (3M); "dpm_solver": DPM-Solver-1/2/3 (num_steps is
    # the NFE budget); "dpm_solver_adaptive": 2 (DPM-Solver-12) or 3 (DPM-Solver-23)
    sampling.dpm_order = 2
    sampling.dpm_rtol = 0.05  # "dpm_solver_adaptive" tolerances (Lu et al. 2022: 0.05, and
    sampling.dpm_atol = 0.0078  # 0.0078 for data in [-1, 1]; scale atol with the data)
    sampling.sde_rtol = 0.05  # "sde_adaptive": reverse-SDE step-size controller tolerances
    sampling.sde_atol = 0.05  # (0.05 matched 1000-step PC on the mixtures of BENCHMARKS.md)
    # Methods "annealed_langevin" / "langevin": NCSN's L levels x T steps with alpha_i =
    # step_size sigma_i^2 / sigma_L^2 (images: 2e-5, 100, 10 as NCSN; in 2-D a larger
    # step, alpha_L = 0.5 sigma_L^2, is as accurate); plain Langevin runs L x T steps at t = eps.
    sampling.langevin_step_size = 5e-5
    sampling.langevin_steps_each = 100
    sampling.langevin_num_levels = 10
    sampling.ode_solver = "tsit5"
    sampling.rtol = 1e-5
    sampling.atol = 1e-5
    sampling.batch_size = 2_000  # --mode sample: number of points in the scatter plot
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
    evaluate.batch_size = 1_000
    evaluate.num_samples = 5_000
    evaluate.exact_trace = True  # 2-D: the exact divergence costs two JVPs
    evaluate.num_probes = 1
    evaluate.probe_noise = "rademacher"  # Hutchinson probes: "rademacher" | "gaussian"
    evaluate.eps = 1e-5  # likelihood: the probability-flow ODE is integrated from t = eps to T
    evaluate.weights = "ema"  # "ema" (as the paper) | "raw": which parameters are evaluated
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

    # --mode encode | interpolate | temperature: probability-flow latent manipulation (paper,
    # Section 4.3); pictures and reports go to workdir/latent/.
    config.latent = latent = ml_collections.ConfigDict()
    latent.num_inputs = 2000  # encode: examples; temperature: samples per temperature
    latent.num_pairs = 6  # interpolate: pairs of examples (rows)
    latent.num_interpolation_steps = 33  # points per interpolation path, endpoints included
    latent.temperatures = "0.0,0.5,0.75,1.0,1.25"  # comma-separated prior-noise scales (rows)
    latent.split = "test"  # "test" | "train": where the encoded examples come from
    latent.batch_size = 2000  # examples per sharded call (rounded up to the device count)
    latent.ode_solver = "tsit5"  # probability-flow ODE solver and tolerances (eps: sampling.eps)
    latent.rtol = 1e-5
    latent.atol = 1e-5

    # --mode toy_figures (2-D data only): score fields and sample paths, in workdir/figures/.
    config.figures = figures = ml_collections.ConfigDict()
    figures.score_times = "0.001,0.1,0.3,1.0"  # comma-separated times of the score-field columns
    figures.arrows = 21  # arrows per side of the score-field grid
    figures.num_trajectories = 12  # prior points whose reverse-SDE and ODE paths are drawn
    figures.sde_steps = 1000  # Euler-Maruyama steps of the reverse-SDE paths
    return config
