"""What the sweep prints: its own lines only. Library chatter (MLflow's table creation, Optuna's study notice,
Tune's file-sync and TensorBoard warnings, Ray's start banner) stays off the console below verbosity 3."""

from __future__ import annotations

import logging


def quiet_libraries(verbose: int) -> None:
    """Raise the log levels of the libraries' loggers (all of them at verbosity 3)."""
    levels = {"mlflow.store.db.utils": logging.WARNING, "alembic": logging.WARNING, "optuna": logging.WARNING,
              "ray.tune.logger.tensorboardx": logging.ERROR, "mlflow.tracking._tracking_service.client":
              logging.WARNING}
    if verbose < 3:
        levels |= {"ray": logging.WARNING, "ray.tune": logging.WARNING}
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)
    try:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
    except ImportError:
        pass
