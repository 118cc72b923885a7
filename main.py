"""Command line: ``python main.py --config CONFIG --workdir DIR --mode MODE``.

Modes: train, eval, sample (also inpainting, colorization and class-conditional sampling through
``--config.sampling.task``), stats, train_classifier, encode, interpolate, temperature and
toy_figures.

Any config field can be overridden, e.g. ``--config.training.n_iters=2000``.
"""

import logging
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Experiment config file.", lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs, samples and reports.")
flags.DEFINE_enum(
    "mode",
    "train",
    [
        "train",
        "eval",
        "sample",
        "stats",
        "train_classifier",
        "encode",
        "interpolate",
        "temperature",
        "toy_figures",
    ],
    "What to run. stats: reference statistics of the dataset for FID/KID; train_classifier: the "
    "noise-conditional classifier of class-conditional sampling; encode/interpolate/temperature: "
    "probability-flow latent manipulation; toy_figures: score fields and trajectories (2-D data).",
)
flags.DEFINE_bool(
    "multihost",
    False,
    "Join a multi-host job with jax.distributed (one process per host, same command on each).",
)
flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (manual multi-host).")
flags.DEFINE_integer("num_processes", None, "Number of processes (manual multi-host).")
flags.DEFINE_integer("process_id", None, "This process's index (manual multi-host).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    del argv
    # TensorFlow (used only for input pipelines) must never grab the accelerators JAX uses.
    try:
        import tensorflow as tf

        tf.config.set_visible_devices([], "GPU")
    except ImportError:
        pass
    if FLAGS.multihost or FLAGS.num_processes is not None:
        from scoresde_jax.distributed import initialize

        initialize(
            coordinator_address=FLAGS.coordinator_address,
            num_processes=FLAGS.num_processes,
            process_id=FLAGS.process_id,
        )
    # Our own progress at INFO; library chatter (Orbax logs every save) only when it matters.
    logging.getLogger().setLevel(logging.WARNING)
    logging.getLogger("scoresde_jax").setLevel(logging.INFO)

    if FLAGS.mode == "train":
        from scoresde_jax.train import train

        train(FLAGS.config, FLAGS.workdir)
        print(f"Training done; checkpoints in {os.path.join(FLAGS.workdir, 'checkpoints')}")
    elif FLAGS.mode == "eval":
        import json

        from scoresde_jax.evaluate import evaluate

        report = evaluate(FLAGS.config, FLAGS.workdir)
        print(json.dumps(report, indent=2))
    elif FLAGS.mode == "sample":
        import json

        from scoresde_jax.evaluate import sample

        print(json.dumps(sample(FLAGS.config, FLAGS.workdir), indent=2))
    elif FLAGS.mode == "stats":
        import json

        from scoresde_jax.evaluate import reference_stats

        print(json.dumps(reference_stats(FLAGS.config, FLAGS.workdir), indent=2))
    elif FLAGS.mode == "train_classifier":
        import json

        from scoresde_jax.noise_classifier import train_classifier

        print(json.dumps(train_classifier(FLAGS.config, FLAGS.workdir), indent=2))
    elif FLAGS.mode in ("encode", "interpolate", "temperature"):
        import json

        from scoresde_jax import manipulate

        run = {
            "encode": manipulate.encode_mode,
            "interpolate": manipulate.interpolate_mode,
            "temperature": manipulate.temperature_mode,
        }[FLAGS.mode]
        print(json.dumps(run(FLAGS.config, FLAGS.workdir), indent=2))
    elif FLAGS.mode == "toy_figures":
        import json

        from scoresde_jax.figures import toy_figures

        print(json.dumps(toy_figures(FLAGS.config, FLAGS.workdir), indent=2))


if __name__ == "__main__":
    app.run(main)
