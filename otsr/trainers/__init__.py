"""The two trainers (``ots``, ``gan``) on one loop skeleton, and the result type they return."""

from otsr.trainers import gan, ots
from otsr.trainers._loop import Progress, Result, pair_from_checkpoint

TRAINERS = {"ots": ots.train, "gan": gan.train}

__all__ = ["TRAINERS", "Progress", "Result", "gan", "ots", "pair_from_checkpoint"]
