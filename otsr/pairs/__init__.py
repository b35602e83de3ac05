"""Problems with (mostly) known OT maps: a source P, a target Q and T* where known."""

from otsr.pairs._base import NoTrueMapError, Pair, validate_pair
from otsr.pairs._convex import ConvexMixture, best_affine_l2_uvp
from otsr.pairs._gaussian import Gaussian, GaussianShift, gaussian_ot_matrix
from otsr.pairs._images import DegradedImages
from otsr.pairs._registry import PAIRS, make_pair, pair_class, pair_parameters, register_pair

__all__ = [
    "PAIRS", "ConvexMixture", "DegradedImages", "Gaussian", "GaussianShift", "NoTrueMapError", "Pair",
    "best_affine_l2_uvp", "gaussian_ot_matrix", "make_pair", "pair_class", "pair_parameters",
    "register_pair", "validate_pair",
]
