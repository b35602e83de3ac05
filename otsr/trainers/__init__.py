"""Training: one loop for every method (``otsr.methods``) and bundle size; ``train`` is a bundle of one."""

from otsr.trainers.loop import train, train_bundle

__all__ = ["train", "train_bundle"]
