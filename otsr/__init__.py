"""otsr: is an unpaired super-resolution map biased? Neural OT (OTS) vs the lambda-regularized GAN.

Front door: ``otsr.solve(pair, method="ots", **config)``; a list-valued setting trains a bundle. The public names
below are imported on first use, so ``otsr --version`` and the sweep driver do not pay for torch up front.
"""

from __future__ import annotations

import importlib

__version__ = "0.3.0"

_PUBLIC = {  # name -> module that defines it
    "metrics": "otsr.metrics", "theory": "otsr.theory", "TrainConfig": "otsr.config", "check_pair": "otsr.evaluation",
    "evaluate": "otsr.evaluation", "METHODS": "otsr.methods", "Method": "otsr.methods",
    "register_method": "otsr.methods", "register_metric": "otsr.metric_registry", "Pair": "otsr.pairs",
    "PairSpec": "otsr.pairs", "make_pair": "otsr.pairs", "register_pair": "otsr.pairs", "recipe": "otsr.recipes",
    "resolve_config": "otsr.recipes", "resolve_members": "otsr.recipes", "Progress": "otsr.result",
    "Result": "otsr.result", "solve": "otsr.solving", "train": "otsr.trainers", "train_bundle": "otsr.trainers",
}

__all__ = sorted([*_PUBLIC, "__version__"])


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'otsr' has no attribute {name!r}")
    module = importlib.import_module(_PUBLIC[name])
    value = module if _PUBLIC[name] == f"otsr.{name}" and not hasattr(module, name) else getattr(module, name)
    globals()[name] = value
    return value


def __dir__():
    return __all__
