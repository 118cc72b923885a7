"""Configs to library objects: the experiment, the trainer, state, checkpoints, writers."""
