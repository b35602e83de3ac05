"""Training methods as objects: ``ots`` (max-min neural OT) and ``gan`` (WGAN-GP + lambda * content cost).

Add a method by subclassing ``Method`` in a new module and calling ``register_method`` on an instance.
"""

from otsr.methods._base import (
    MEMBER_FIELDS,
    METHODS,
    Method,
    comparison_methods,
    get_method,
    reference_methods,
    register_method,
    swept_methods,
)
from otsr.methods.gan import GAN, gradient_penalty
from otsr.methods.ots import OTS

__all__ = ["GAN", "MEMBER_FIELDS", "METHODS", "OTS", "Method", "comparison_methods", "get_method", "gradient_penalty",
           "reference_methods", "register_method", "swept_methods"]
