"""Every metric otsr reports, in one table: its better direction, when it is computed and what it means.

Evaluation, the sweep's objectives and early stopping (periodic metrics), the report table and the pairs' own
metrics all read this registry, so a metric name is written down once.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class MetricInfo:
    """One metric: name, better direction, whether periodic evaluations compute it, and a one-line meaning."""

    name: str
    better: str  # 'min' or 'max'
    periodic: bool  # computed at every periodic evaluation (usable by ASHA); else only at the end
    doc: str
    table: bool = True  # shown in the sweep report's table


METRICS: dict[str, MetricInfo] = {}


def register_metric(name: str, better: str, periodic: bool, doc: str, table: bool = True) -> MetricInfo:
    """Add a metric (pairs with their own metrics register them); re-registering the same name replaces it."""
    if better not in ("min", "max"):
        raise ValueError(f"metric {name!r}: better={better!r} must be 'min' or 'max'")
    METRICS[name] = MetricInfo(name, better, periodic, doc, table)
    return METRICS[name]


def metric_direction(name: str) -> str:
    """'min' or 'max': which way ``name`` is better ('min' for names the registry does not know)."""
    return METRICS[name].better if name in METRICS else "min"


def table_metrics() -> list[str]:
    """Names shown in report tables, in registry order."""
    return [m.name for m in METRICS.values() if m.table]


for _args in [
    ("l2_uvp", "min", True, "100 % E|T(x) - T*(x)|^2 / Var(Q): distance to the true OT map"),
    ("cos", "max", True, "cosine between the displacements T(x) - x and T*(x) - x"),
    ("bias_mean_shift", "min", True, "|E T(x) - E y|: bias of T#P against Q, first moment"),
    ("bias_sliced_w2", "min", True, "sliced W2 between T#P and Q (128 random directions)"),
    ("bias_frechet", "min", True, "Frechet distance between Gaussian fits of T#P and Q (samples <= 1024 coords)"),
    ("bias_frechet_pool16", "min", True, "Frechet distance of 16x16 average-pooled images of T#P and Q"),
    ("bias_frechet_hf", "min", True, "Frechet distance of full-resolution 8x8 patches of the high-pass band (image "
     "minus its Gaussian blur) of T#P and Q: the fine detail a blurry map cannot match"),
    ("ot_consistency", "max", False, "share of the optimal assignment {x_i} -> {T(x_i)} that is the identity"),
    ("transport_cost", "min", True, "E c(x, T(x)): the content cost the map pays"),
    ("map_change", "min", True, "100 % E|T_now(x) - T_before(x)|^2 / Var(Q) since the previous evaluation: a "
     "convergence signal that needs no T*", False),
    ("selected_step", "max", False, "the step whose state the run returned (otsr.selection: the latest state whose "
     "held-out bias is within noise of the best seen; the last step unless the run regressed)", False),
    ("shift", "max", True, "gaussian-shift: learned translation along delta (compare with otsr.theory)", False),
    ("psnr", "max", True, "PSNR (dB) of T(LR) against the paired HR validation images"),
    ("ssim", "max", True, "SSIM (scikit-image defaults) of T(LR) against the paired HR images"),
    ("psnr_bicubic", "max", True, "PSNR (dB) of bicubic upsampling, the baseline"),
    ("ssim_bicubic", "max", True, "SSIM of bicubic upsampling, the baseline"),
    ("lpips", "min", True, "LPIPS (AlexNet, lpips package) of T(LR) against the HR images"),
    ("fid", "min", False, "FID (the FID Inception network, pool3) of T(LR crops) against HR crops"),
]:
    register_metric(*_args)
