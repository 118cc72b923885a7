"""Shared defaults of the 2-D toy experiments (an MLP score network, trained on a CPU in minutes).

Each file beside this one imports :func:`get_default_config` and changes a few fields.
"""

import ml_collections

from configs import common


def get_default_config() -> ml_collections.ConfigDict:
    config = common.defaults()

    training = config.training
    training.sde = "vpsde"
    training.reduce_mean = True
    training.ism_exact_trace = True  # ism: exact Jacobian trace (two JVPs in 2-D) or Hutchinson
    training.batch_size = 512
    training.n_iters = 20_000
    training.n_jitted_steps = 100  # optimizer steps per compiled call (lax.scan)
    training.log_freq = 500
    training.snapshot_freq = 5_000  # kept checkpoints (and sample pictures)
    training.snapshot_freq_for_preemption = 1_000  # the newest 2 of these are kept
    training.eval_freq = 1_000  # loss on a held-out batch, logged
    training.snapshot_samples = 2_000
    training.max_to_keep = 3

    sampling = config.sampling
    sampling.predictor = "euler_maruyama"
    sampling.corrector = "none"
    # Langevin: in 2-D a larger step than NCSN's, alpha_L = 0.5 sigma_L^2, is as accurate.
    sampling.langevin_step_size = 5e-5
    sampling.batch_size = 2_000  # --mode sample: number of points in the scatter plot

    evaluate = config.eval
    evaluate.batch_size = 1_000
    evaluate.num_samples = 5_000
    evaluate.exact_trace = True  # 2-D: the exact divergence costs two JVPs

    config.data = data = ml_collections.ConfigDict()
    data.dataset_kind = "toy"
    data.dataset = "gmm"
    data.dim = 2
    data.n_train = 50_000
    data.n_test = 5_000
    data.seed = 0

    model = config.model
    model.name = "mlp"
    model.hidden = (256, 256, 256)
    model.embedding = "positional"
    model.embed_dim = 64
    model.fourier_scale = 16.0
    model.scale_by_sigma = False
    model.ema_rate = 0.999
    model.sigma_max = 4.0  # about the largest distance between two training points

    optim = config.optim
    optim.lr = 1e-3
    optim.warmup = 500

    latent = config.latent
    latent.num_inputs = 2000
    latent.num_pairs = 6
    latent.num_interpolation_steps = 33
    latent.batch_size = 2000

    # --mode toy_figures (2-D data only): score fields and sample paths, in workdir/figures/.
    config.figures = figures = ml_collections.ConfigDict()
    figures.score_times = "0.001,0.1,0.3,1.0"  # comma-separated times of the score-field columns
    figures.arrows = 21  # arrows per side of the score-field grid
    figures.num_trajectories = 12  # prior points whose reverse-SDE and ODE paths are drawn
    figures.sde_steps = 1000  # Euler-Maruyama steps of the reverse-SDE paths
    return config
