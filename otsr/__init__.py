"""otsr: is an unpaired super-resolution map biased? Neural OT (OTS) vs the lambda-regularized GAN.

Front door: ``otsr.solve(pair, method="ots", **config)``.
"""

from otsr import metrics, theory
from otsr.config import TrainConfig
from otsr.evaluation import check_pair, evaluate
from otsr.metric_registry import register_metric
from otsr.pairs import Pair, PairSpec, make_pair, register_pair
from otsr.recipes import recipe, resolve_config
from otsr.result import Progress, Result
from otsr.solve import solve
from otsr.trainers import TRAINERS

__version__ = "0.2.0"

__all__ = ["TRAINERS", "Pair", "PairSpec", "Progress", "Result", "TrainConfig", "__version__", "check_pair",
           "evaluate", "make_pair", "metrics", "recipe", "register_metric", "register_pair", "resolve_config",
           "solve", "theory"]
