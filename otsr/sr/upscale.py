"""Super-resolve whole images of any size with a trained map, tile by tile with overlap.

Each LR tile is cut with ``overlap`` extra pixels on every side; only its core goes into the output, so as
long as the overlap covers the network's receptive field the result equals the untiled one.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torchvision.io import write_png

from otsr.checkpoint import CheckpointError, load_checkpoint
from otsr.config import TrainConfig
from otsr.models import MemberView
from otsr.sr.data import read_image
from otsr.state import CHECKPOINT_FORMAT, build_models


def load_map(checkpoint: str | Path, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, int]:
    """The map of an SR checkpoint (rebuilt from its own config and stored sample shapes) and its scale."""
    ck = load_checkpoint(Path(checkpoint), map_location="cpu")
    shapes = ck.get("shapes") or {}
    shape, shape_q = tuple(shapes.get("p", ())), tuple(shapes.get("q", ()))
    if len(shape) != 3 or len(shape_q) != 3 or shape_q[1] <= shape[1]:
        raise CheckpointError(f"checkpoint {checkpoint} is not a super-resolution map (samples {shape} -> "
                              f"{shape_q}); upscale needs a run on an SR pair such as sr-folders")
    net, _ = build_models(TrainConfig.from_dict(ck["config"]), shape, shape_q)
    if ck.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"checkpoint {checkpoint} was written by an older otsr (before bundles); its map "
                              "cannot be loaded: train a new run")
    net.load_state_dict(ck["map"])
    return MemberView(net).to(device).eval(), shape_q[1] // shape[1]


@torch.no_grad()
def upscale_tiled(net: torch.nn.Module, lr: torch.Tensor, scale: int, tile: int = 64,
                  overlap: int = 16) -> torch.Tensor:
    """Apply ``net`` to an image (1, C, h, w) in tiles of ``tile`` LR pixels with ``overlap`` context each side."""
    if tile < 1 or overlap < 0:
        raise ValueError(f"tile={tile} must be >= 1 and overlap={overlap} >= 0")
    _, c, h, w = lr.shape
    out = torch.zeros(1, c, h * scale, w * scale, device=lr.device)
    for y0 in range(0, h, tile):
        for x0 in range(0, w, tile):
            y1, x1 = min(y0 + tile, h), min(x0 + tile, w)
            ya, xa = max(0, y0 - overlap), max(0, x0 - overlap)
            yb, xb = min(h, y1 + overlap), min(w, x1 + overlap)
            sr = net(lr[..., ya:yb, xa:xb])
            oy, ox = (y0 - ya) * scale, (x0 - xa) * scale
            out[..., y0 * scale:y1 * scale, x0 * scale:x1 * scale] = \
                sr[..., oy:oy + (y1 - y0) * scale, ox:ox + (x1 - x0) * scale]
    return out


def upscale_files(checkpoint: str | Path, images: list[str | Path], out_dir: str | Path, *, device: str = "cpu",
                  tile: int = 64, overlap: int = 16) -> list[Path]:
    """Super-resolve image files into PNGs named ``<stem>_x<scale>.png`` in ``out_dir``."""
    net, scale = load_map(checkpoint, device)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for f in images:
        lr = read_image(Path(f)).float()[None].to(device) / 255
        sr = upscale_tiled(net, lr, scale, tile, overlap).clamp(0, 1)
        path = out_dir / f"{Path(f).stem}_x{scale}.png"
        write_png((sr[0] * 255).round().to(torch.uint8).cpu(), str(path))
        written.append(path)
    return written
