"""Training methods as objects: ``ots`` (max-min neural OT) and ``gan`` (WGAN-GP + lambda * content cost).

Add a method by subclassing ``Method`` in a new module and calling ``register_method`` on an instance.
"""

from otsr.methods._base import (
    MEMBER_FIELDS,
    METHODS,
    Method,
    check_count,
    check_number,
    comment_help,
    comparison_methods,
    get_method,
    owner,
    reference_methods,
    register_method,
    swept_methods,
)
from otsr.methods.gan import GAN, GANSettings, gradient_penalty
from otsr.methods.ots import OTS, OTSSettings

__all__ = ["GAN", "GANSettings", "MEMBER_FIELDS", "METHODS", "OTS", "OTSSettings", "Method", "check_count",
           "check_number", "comment_help", "comparison_methods", "get_method", "gradient_penalty", "owner",
           "reference_methods", "register_method", "swept_methods"]
