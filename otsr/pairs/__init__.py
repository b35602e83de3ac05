"""Problems with (mostly) known OT maps: a source P, a target Q and T* where known."""

from otsr.pairs._base import (
    FeatureMetric,
    NoTrueMapError,
    Pair,
    PairMetric,
    PairSpec,
    PushforwardPair,
    SampleMetric,
    ValidationMetrics,
    cached_to,
)
from otsr.pairs._convex import ConvexMixture, best_affine_l2_uvp
from otsr.pairs._convex_images import ConvexImages
from otsr.pairs._gaussian import Gaussian, GaussianShift, gaussian_ot_matrix
from otsr.pairs._icnn import ICNNMixture
from otsr.pairs._images import DEMO_PHOTOS, DegradedImages, blur, bundled_photo, gaussian_kernel
from otsr.pairs._registry import PAIRS, make_pair, pair_class, pair_names, pair_parameters, register_pair

__all__ = [
    "DEMO_PHOTOS", "PAIRS", "ConvexImages", "ConvexMixture", "DegradedImages", "FeatureMetric", "Gaussian",
    "GaussianShift", "ICNNMixture", "NoTrueMapError", "Pair", "PairMetric", "PairSpec", "PushforwardPair",
    "SampleMetric", "ValidationMetrics", "best_affine_l2_uvp", "blur", "bundled_photo", "cached_to",
    "gaussian_kernel", "gaussian_ot_matrix", "make_pair", "pair_class", "pair_names", "pair_parameters",
    "register_pair",
]
