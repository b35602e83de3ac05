"""otsr: is an unpaired super-resolution map biased? Neural OT (OTS) vs the lambda-regularized GAN.

Front door: ``otsr.solve(pair, method="ots", **config)``.
"""

from otsr import metrics, theory
from otsr.config import TrainConfig
from otsr.evaluation import evaluate
from otsr.pairs import Pair, make_pair, register_pair
from otsr.solve import solve
from otsr.trainers import TRAINERS, Progress, Result

__all__ = ["TRAINERS", "Pair", "Progress", "Result", "TrainConfig", "evaluate", "make_pair", "metrics",
           "register_pair", "solve", "theory"]
