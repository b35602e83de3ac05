"""What the sweep prints: its own lines only. Library chatter (MLflow's table creation, Optuna's study notice,
Tune's file-sync and TensorBoard warnings, Ray's start banner) stays off the console below verbosity 3.

This is the one place where warnings are filtered, and only the named ones: Optuna's ExperimentalWarning for the
QMC sampler and for ``Study.set_metric_names`` (both experimental in name only, stable in use here), and Ray's
notice that a new local node uses token authentication (Ray's own default, which in-process Ray keeps: it makes
``~/.ray/auth_token`` once). Every other warning still shows, Ray's warning that authentication is *off* included.
"""

from __future__ import annotations

import logging
import warnings

EXPERIMENTAL_IN_USE = r".*\b(QMCSampler|set_metric_names) is experimental"  # Optuna's wording, e.g. "QMCSampler is
# experimental (supported from v3.0.0). The interface can change in the future."


RAY_TOKEN_LOGGER = "ray._private.authentication.authentication_token_setup"
RAY_TOKEN_DEFAULT = "Token authentication is enabled for this Ray cluster"


class _DropMessage(logging.Filter):
    """Drops the records of one logger whose message starts with ``prefix``."""

    def __init__(self, prefix: str):
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefix)


def quiet_ray_token_notice() -> None:
    """Drop Ray's notice that a new local node uses its default token authentication (nothing else)."""
    logger = logging.getLogger(RAY_TOKEN_LOGGER)
    if not any(isinstance(f, _DropMessage) and f.prefix == RAY_TOKEN_DEFAULT for f in logger.filters):
        logger.addFilter(_DropMessage(RAY_TOKEN_DEFAULT))


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
    quiet_ray_token_notice()
    try:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
    except ImportError:
        pass
