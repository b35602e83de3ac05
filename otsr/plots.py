"""Figures: labelled scatter panels (matplotlib when installed, a dependency-free fallback otherwise: the core
needs only torch), image grids, and metric curves against training steps."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import torch

from otsr.metric_registry import METRICS
from otsr.sampling import draw, draw_q

PANEL = 256
COLOURS = {"P": (31, 119, 180), "Q": (44, 160, 44), "T#P": (214, 39, 40)}


def _projection(ref: torch.Tensor) -> torch.Tensor:
    """Top-2 principal directions of ``ref`` (vectors), or the two coordinates when d <= 2."""
    d = ref.shape[1]
    if d == 1:
        return torch.ones(1, 2)
    if d == 2:
        return torch.eye(2)
    c = torch.cov(ref.T.double())
    return torch.linalg.eigh(c)[1][:, -2:].flip(1).float()


def _pyplot():
    """matplotlib's pyplot on the Agg backend, or None when matplotlib is not installed (GPU machines)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def _fixed_margins(fig, title: bool) -> None:
    """Margins in inches for a one-row figure of labelled panels: what ``tight_layout`` chose for these figures,
    without its text measuring (2/3 of a figure's drawing time; a sweep draws two figures per member)."""
    w, h = fig.get_size_inches()
    fig.subplots_adjust(left=0.85 / w, right=1 - 0.15 / w, bottom=0.5 / h, top=1 - (0.6 if title else 0.35) / h,
                        wspace=0.32)


def labelled_scatter(samples: dict[str, torch.Tensor], title: str = "") -> torch.Tensor | None:
    """P | Q | T#P as labelled matplotlib panels (Q's principal plane, common limits that hold all points,
    T#P over a faint Q for comparison), returned as a (3, H, W) uint8 image; None without matplotlib."""
    plt = _pyplot()
    if plt is None:
        return None
    import numpy as np

    samples = {k: v.detach().cpu().float().flatten(1) for k, v in samples.items()}
    ref = samples.get("Q", next(iter(samples.values())))
    proj = _projection(ref)
    pts = {k: (v @ proj).numpy() for k, v in samples.items()}
    allp = torch.cat([torch.from_numpy(p) for p in pts.values()])
    lo, hi = allp.min(0).values, allp.max(0).values
    pad = 0.05 * (hi - lo).clamp_min(1e-6)
    axis = "coordinate" if ref.shape[1] <= 2 else "principal direction of Q"
    fig, axes = plt.subplots(1, len(pts), figsize=(3.4 * len(pts), 3.4), squeeze=False, sharex=True, sharey=True)
    for ax, (name, p) in zip(axes[0], pts.items()):
        if name == "T#P" and "Q" in pts:
            ax.scatter(pts["Q"][:, 0], pts["Q"][:, 1], s=2, c="0.8", label="Q", rasterized=True)
        colour = [c / 255 for c in COLOURS.get(name, (0, 0, 0))]
        ax.scatter(p[:, 0], p[:, 1], s=2, color=colour, label=name, rasterized=True)
        ax.set_title({"P": "P (input)", "Q": "Q (target)", "T#P": "T#P (mapped input)"}.get(name, name), fontsize=9)
        ax.set_xlim(float(lo[0] - pad[0]), float(hi[0] + pad[0]))
        ax.set_ylim(float(lo[1] - pad[1]), float(hi[1] + pad[1]))
        ax.set_xlabel(f"1st {axis}", fontsize=8)
        ax.legend(fontsize=7, loc="upper right", markerscale=4)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(f"2nd {axis}", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    _fixed_margins(fig, bool(title))
    fig.set_dpi(90)
    fig.canvas.draw()  # Agg's own pixels: no PNG round trip (and no torchvision import)
    rgba = np.asarray(fig.canvas.buffer_rgba())
    plt.close(fig)
    return torch.from_numpy(rgba[..., :3].copy()).permute(2, 0, 1).contiguous()


def scatter_panels(samples: dict[str, torch.Tensor]) -> torch.Tensor:
    """One panel per named sample set, all projected on Q's top-2 principal plane with common limits (the
    dependency-free fallback of ``labelled_scatter``)."""
    samples = {k: v.detach().cpu().float().flatten(1) for k, v in samples.items()}
    proj = _projection(samples.get("Q", next(iter(samples.values()))))
    pts = {k: v @ proj for k, v in samples.items()}
    allp = torch.cat(list(pts.values()))
    lo, hi = allp.quantile(0.005, dim=0), allp.quantile(0.995, dim=0)
    panels = []
    for name, p in pts.items():
        img = torch.full((3, PANEL, PANEL), 255, dtype=torch.uint8)
        ij = ((p - lo) / (hi - lo).clamp_min(1e-9) * (PANEL - 3)).round().long()
        ok = ((ij >= 0) & (ij < PANEL - 2)).all(1)
        ij = ij[ok]
        colour = torch.tensor(COLOURS.get(name, (0, 0, 0)), dtype=torch.uint8)[:, None]
        for dy in (0, 1):
            for dx in (0, 1):
                img[:, PANEL - 1 - (ij[:, 1] + dy), ij[:, 0] + dx] = colour
        img[:, :, 0] = img[:, 0, :] = img[:, :, -1] = img[:, -1, :] = 0  # frame
        panels.append(img)
    return torch.cat(panels, dim=2)


def image_rows(rows: list[torch.Tensor], nrow: int, pad: int = 2) -> torch.Tensor:
    """Stack batches of images (each (n, 3, H, W) in [0, 1]) as rows of one uint8 grid, ``nrow`` images a row,
    ``pad`` white pixels around each."""
    imgs = torch.cat([r[:nrow].detach().cpu().float().clamp(0, 1) for r in rows])
    n, c, h, w = imgs.shape
    cols = min(nrow, n)
    lines = -(-n // cols)
    grid = torch.ones(c, lines * (h + pad) + pad, cols * (w + pad) + pad)
    for k, img in enumerate(imgs):
        y, x = (k // cols) * (h + pad) + pad, (k % cols) * (w + pad) + pad
        grid[:, y:y + h, x:x + w] = img
    return (grid * 255).round().to(torch.uint8)


def save_png(img: torch.Tensor, path: Path) -> Path:
    """Write a (3, H, W) or (1, H, W) uint8 tensor as an 8-bit PNG (zlib only: no image library, so the training
    path does not import torchvision, ~1.3 s per process)."""
    c, h, w = img.shape
    if img.dtype != torch.uint8 or c not in (1, 3):
        raise ValueError(f"save_png takes a (1 or 3, H, W) uint8 tensor, got {tuple(img.shape)} {img.dtype}")
    rows = img.permute(1, 2, 0).contiguous().numpy().reshape(h, w * c)
    raw = b"".join(b"\x00" + row.tobytes() for row in rows)  # filter type 0 on every scanline

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", w, h, 8, 2 if c == 3 else 0, 0, 0, 0)
    Path(path).write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 6))
                           + chunk(b"IEND", b""))
    return Path(path)


@torch.no_grad()
def map_figure(t, pair, device, n: int = 2000, seed: int = 0, title: str = "") -> torch.Tensor:
    """Vectors: panels P | Q | T#P titled ``title`` (default: the pair). Images: a grid of 8 samples whose rows
    are inputs, T(inputs), targets."""
    own = pair.figure(t, device)  # pairs with validation data draw their own grid (super-resolution)
    if own is not None:
        return own
    g = torch.Generator(device=device).manual_seed(seed)
    if len(pair.shape) == 1:
        x = draw(pair, n, g, False)[0]
        panels = {"P": x, "Q": draw_q(pair, n, g), "T#P": t(x)}
        img = labelled_scatter(panels, title=title or f"{pair!r}, {n} samples")
        return img if img is not None else scatter_panels(panels)
    k = 8
    x, y = draw(pair, k, g, True) if pair.has_true_map else (draw(pair, k, g, False)[0], draw_q(pair, k, g))
    return image_rows([x, t(x), y], nrow=k)  # rows: inputs, T(inputs), targets


# drawn after the pair's headline metrics, when present
CURVE_KEYS = ("l2_uvp", "psnr", "bias_sliced_w2", "bias_frechet", "bias_frechet_hf", "bias_frechet_pool16", "ssim",
              "map_change", "transport_cost")


def curves_figure(evals: list[dict[str, float]], path: Path, title: str = "",
                  headline: tuple[str, ...] = ()) -> Path | None:
    """Metrics of the periodic and final evaluations against steps (one panel each): the pair's ``headline``
    metrics first, then CURVE_KEYS; bicubic baselines of SR pairs as dashed lines. Needs matplotlib (the sweep
    extra); without it nothing is drawn and None returned."""
    plt = _pyplot()
    if plt is None:
        return None
    keys = [k for k in dict.fromkeys([*headline, *CURVE_KEYS])
            if (k not in METRICS or METRICS[k].periodic) and any(k in e for e in evals)]
    if not keys:
        return None
    fig, axes = plt.subplots(1, len(keys), figsize=(3.6 * len(keys), 3.2), squeeze=False)
    for ax, key in zip(axes[0], keys):
        pts = [(e["step"], e[key]) for e in evals if key in e]
        ax.plot(*zip(*pts), "o-", ms=3, label=key)
        base = f"{key}_bicubic"
        if any(base in e for e in evals):
            ax.plot(*zip(*[(e["step"], e[base]) for e in evals if base in e]), "k--", lw=1, label="bicubic")
            ax.legend(fontsize=7)
        ax.set_xlabel("step")
        ax.set_title(key)
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=9)
    _fixed_margins(fig, bool(title))
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)
