"""What the sweep prints: its own lines only. Library chatter (MLflow's table creation, Optuna's study notice,
Tune's file-sync and TensorBoard warnings, Ray's start banner) stays off the console below verbosity 3.

This is the one place where warnings are filtered, and only the named ones: Optuna's ExperimentalWarning for the
QMC sampler and for ``Study.set_metric_names`` (both experimental in name only, stable in use here). Every other
warning still shows.
"""

from __future__ import annotations

import logging
import warnings

EXPERIMENTAL_IN_USE = r".*\b(QMCSampler|set_metric_names) is experimental"  # Optuna's wording, e.g. "QMCSampler is
# experimental (supported from v3.0.0). The interface can change in the future."


def quiet_warnings() -> None:
    """Filter the named Optuna ExperimentalWarnings (see the module docstring); nothing else."""
    try:
        from optuna.exceptions import ExperimentalWarning
    except ImportError:
        return
    warnings.filterwarnings("ignore", message=EXPERIMENTAL_IN_USE, category=ExperimentalWarning)


def quiet_libraries(verbose: int) -> None:
    """Raise the log levels of the libraries' loggers (all of them at verbosity 3)."""
    levels = {"mlflow.store.db.utils": logging.WARNING, "alembic": logging.WARNING, "optuna": logging.WARNING,
              "ray.tune.logger.tensorboardx": logging.ERROR, "mlflow.tracking._tracking_service.client":
              logging.WARNING}
    if verbose < 3:
        levels |= {"ray": logging.WARNING, "ray.tune": logging.WARNING}
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)
    quiet_warnings()
    try:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
    except ImportError:
        pass
