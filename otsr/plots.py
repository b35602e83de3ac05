"""PNG figures without plotting libraries (the core needs only torch): scatter panels and image grids."""

from __future__ import annotations

from pathlib import Path

import torch
from torchvision.io import write_png
from torchvision.utils import make_grid

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


def scatter_panels(samples: dict[str, torch.Tensor]) -> torch.Tensor:
    """One panel per named sample set, all projected on Q's top-2 principal plane with common limits."""
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


def image_rows(rows: list[torch.Tensor], nrow: int) -> torch.Tensor:
    """Stack batches of images (each (n, 3, H, W) in [0, 1]) as rows of one uint8 grid."""
    imgs = torch.cat([r[:nrow].detach().cpu().float().clamp(0, 1) for r in rows])
    return (make_grid(imgs, nrow=nrow, padding=2, pad_value=1.0) * 255).round().to(torch.uint8)


def save_png(img: torch.Tensor, path: Path) -> Path:
    """Write a (3, H, W) uint8 tensor as PNG."""
    write_png(img, str(path))
    return Path(path)


@torch.no_grad()
def map_figure(t, pair, device, n: int = 2000, seed: int = 0) -> torch.Tensor:
    """Vectors: panels P | Q | T#P. Images: a grid whose columns are inputs | T(inputs) | targets."""
    if hasattr(pair, "figure"):  # pairs with validation data draw their own grid (super-resolution)
        return pair.figure(t, device)
    g = torch.Generator(device=device).manual_seed(seed)
    if len(pair.shape) == 1:
        x = pair.sample_p(n, g)
        return scatter_panels({"P": x, "Q": pair.sample_q(n, g), "T#P": t(x)})
    k = 8
    x, y = pair.sample_with_target(k, g) if pair.has_true_map else (pair.sample_p(k, g), pair.sample_q(k, g))
    cols = torch.stack([x, t(x), y], 1).flatten(0, 1)  # each row: input, output, target
    return image_rows([cols], nrow=6)
