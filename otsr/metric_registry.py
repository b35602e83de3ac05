"""Every metric otsr reports, in one table: its better direction, when it is computed, its role in a comparison
and what it means.

Evaluation, the sweep's objectives and early stopping (periodic metrics), the report table and the pairs' own
metrics all read this registry, so a metric name is written down once. Which metric *heads* a comparison (the
report's panels, the MLflow views, ``otsr train``'s summary, the benchmarks) is declared once per pair by
``Pair.headline()``, as a ``Headline``.
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
    role: str = ""  # what it measures in a comparison: one of ROLES ('' for none of them)


# accuracy: closeness to the true map (or to the HR images); bias: T#P against Q; consistency: whether T is an OT
# map onto its own image; cost: what the map pays in content; convergence: training signals; baseline: references
ROLES = ("accuracy", "bias", "consistency", "cost", "convergence", "baseline", "selection", "")
METRICS: dict[str, MetricInfo] = {}


def register_metric(name: str, better: str, periodic: bool, doc: str, table: bool = True,
                    role: str = "") -> MetricInfo:
    """Add a metric (pairs with their own metrics register them); re-registering the same name replaces it."""
    if better not in ("min", "max"):
        raise ValueError(f"metric {name!r}: better={better!r} must be 'min' or 'max'")
    if role not in ROLES:
        raise ValueError(f"metric {name!r}: role={role!r} must be one of {', '.join(r for r in ROLES if r)} or ''")
    METRICS[name] = MetricInfo(name, better, periodic, doc, table, role)
    return METRICS[name]


def metric_role(name: str) -> str:
    """The role of ``name`` in a comparison ('' for names the registry does not know)."""
    return METRICS[name].role if name in METRICS else ""


@dataclasses.dataclass(frozen=True)
class Headline:
    """The metrics a comparison is read by, one per role: the bias of T#P against Q, the accuracy (distance to
    the true map, or fidelity on paired validation data; None when the pair has neither) and OT-consistency."""

    bias: str
    accuracy: str | None = None
    consistency: str | None = "ot_consistency"

    def names(self) -> tuple[str, ...]:
        """Accuracy, bias, consistency: those that are set."""
        return tuple(n for n in (self.accuracy, self.bias, self.consistency) if n)

    def to_dict(self) -> dict[str, str | None]:
        """Plain dict (for a sweep's ``resolved.json``)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Headline:
        """The inverse of ``to_dict``."""
        return cls(**d)


def metric_direction(name: str) -> str:
    """'min' or 'max': which way ``name`` is better ('min' for names the registry does not know)."""
    return METRICS[name].better if name in METRICS else "min"


def table_metrics() -> list[str]:
    """Names shown in report tables, in registry order."""
    return [m.name for m in METRICS.values() if m.table]


for _role, _args in [
    ("accuracy", ("l2_uvp", "min", True, "100 % E|T(x) - T*(x)|^2 / Var(Q): distance to the true OT map")),
    ("accuracy", ("cos", "max", True, "cosine between the displacements T(x) - x and T*(x) - x")),
    ("bias", ("bias_mean_shift", "min", True, "|E T(x) - E y|: bias of T#P against Q, first moment")),
    ("bias", ("bias_sliced_w2", "min", True, "sliced W2 between T#P and Q (128 random directions)")),
    ("bias", ("bias_frechet", "min", True, "Frechet distance between Gaussian fits of T#P and Q (samples <= 1024 "
              "coords)")),
    ("bias", ("bias_frechet_pool16", "min", True, "Frechet distance of 16x16 average-pooled images of T#P and Q")),
    ("bias", ("bias_frechet_hf", "min", True, "Frechet distance of full-resolution 8x8 patches of the high-pass band "
              "(image minus its Gaussian blur) of T#P and Q: the fine detail a blurry map cannot match")),
    ("consistency", ("ot_consistency", "max", False, "share of the optimal assignment {x_i} -> {T(x_i)} that is the "
                     "identity")),
    ("cost", ("transport_cost", "min", True, "E c(x, T(x)): the content cost the map pays")),
    ("convergence", ("map_change", "min", True, "100 % E|T_now(x) - T_before(x)|^2 / Var(Q) since the previous "
                     "evaluation: a convergence signal that needs no T*", False)),
    ("selection", ("selected_step", "max", False, "the step whose state the run returned (otsr.selection: the latest "
                   "state whose held-out bias is within noise of the best seen; the last step unless the run "
                   "regressed)", False)),
    ("", ("shift", "max", True, "gaussian-shift: learned translation along delta (compare with otsr.theory)", False)),
    ("accuracy", ("psnr", "max", True, "PSNR (dB) of T(LR) against the paired HR validation images")),
    ("accuracy", ("ssim", "max", True, "SSIM (scikit-image defaults) of T(LR) against the paired HR images")),
    ("baseline", ("psnr_bicubic", "max", True, "PSNR (dB) of bicubic upsampling, the baseline")),
    ("baseline", ("ssim_bicubic", "max", True, "SSIM of bicubic upsampling, the baseline")),
    ("accuracy", ("lpips", "min", True, "LPIPS (AlexNet, lpips package) of T(LR) against the HR images")),
    ("bias", ("fid", "min", False, "FID (the FID Inception network, pool3) of T(LR crops) against HR crops")),
]:
    register_metric(*_args, role=_role)
