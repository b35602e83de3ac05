"""An offline demo dataset for unpaired ×4 SR, built from photographs that installed packages ship.

Each training photo is cut into tiles that alternate between the HR pool and the LR pool (degraded: blur, ×4
downsampling, noise, JPEG compression — a degradation the model is not told): the pools are disjoint crops of the
same photos, so they share one content distribution and the bias of a map measures detail, not which photos went
where. The HR originals of the LR tiles are kept in ``train_lr_hr`` for measurement only (the content floor:
HR vs HR of the other pool); a held-out photo gives the paired validation set. Layout as AIM19 (train_hr,
train_lr, valid_hr, valid_lr) plus that reference folder.
"""

from __future__ import annotations

import random
from pathlib import Path

import torch
import torch.nn.functional as F
from torchvision.io import decode_jpeg, encode_jpeg, write_png

from otsr.pairs import DEMO_PHOTOS, blur, bundled_photo, gaussian_kernel

TRAIN_PHOTOS = DEMO_PHOTOS
VALID_PHOTOS = ("coffee",)
TILE = 192  # HR tiles cut from each photo (multiple of the scale)
VERSION = "v2"  # tiles of one photo alternate between the pools (v1 split the pools by photo)


def degrade(hr: torch.Tensor, scale: int, rng: random.Random) -> torch.Tensor:
    """Unknown-to-the-model degradation: blur (random width), ×scale bicubic downsampling, noise, JPEG."""
    x = hr.float()[None] / 255
    sigma = rng.uniform(0.8, 1.6)
    x = blur(x, gaussian_kernel(sigma))
    x = F.interpolate(x, scale_factor=1 / scale, mode="bicubic", antialias=True, align_corners=False)
    g = torch.Generator().manual_seed(rng.randrange(2**31))
    x = (x + rng.uniform(0.005, 0.02) * torch.randn(x.shape, generator=g)).clamp(0, 1)
    jpg = encode_jpeg((x[0] * 255).round().to(torch.uint8), quality=rng.randrange(55, 85))
    return decode_jpeg(jpg)


def _tiles(img: torch.Tensor, tile: int) -> list[torch.Tensor]:
    h, w = img.shape[-2:]
    return [img[:, y:y + tile, x:x + tile] for y in range(0, h - tile + 1, tile) for x in range(0, w - tile + 1, tile)]


def build_demo(root: str | Path, scale: int = 4, seed: int = 0) -> Path:
    """Write the demo dataset under ``root`` (once: an existing complete folder is reused)."""
    root = Path(root)
    done = root / ".complete"
    if done.exists() and VERSION in done.read_text():
        return root
    rng = random.Random(seed)
    for sub in ("train_hr", "train_lr", "train_lr_hr", "valid_hr", "valid_lr"):
        if (root / sub).exists():
            for old in (root / sub).iterdir():
                old.unlink()
        (root / sub).mkdir(parents=True, exist_ok=True)
    for name in TRAIN_PHOTOS:
        for i, t in enumerate(_tiles(bundled_photo(name), TILE)):
            if i % 2 == 0:
                write_png(t.contiguous(), str(root / "train_hr" / f"{name}_{i:03d}.png"))
            else:
                write_png(degrade(t, scale, rng), str(root / "train_lr" / f"{name}_{i:03d}.png"))
                write_png(t.contiguous(), str(root / "train_lr_hr" / f"{name}_{i:03d}.png"))
    for name in VALID_PHOTOS:
        for i, t in enumerate(_tiles(bundled_photo(name), TILE)):
            write_png(t.contiguous(), str(root / "valid_hr" / f"{name}_{i:03d}.png"))
            write_png(degrade(t, scale, rng), str(root / "valid_lr" / f"{name}_{i:03d}.png"))
    done.write_text(f"{VERSION} scale={scale} seed={seed}\n")
    return root


def default_demo_root(scale: int = 4) -> Path:
    """Where ``source: demo`` builds the demo set for ``scale``: $OTSR_DATA or ~/.cache/otsr, subfolder sr_demo
    (x4) or sr_demo_x<scale> (each scale has its own LR images)."""
    import os

    return Path(os.environ.get("OTSR_DATA", Path.home() / ".cache" / "otsr")) / (
        "sr_demo" if scale == 4 else f"sr_demo_x{scale}")


__all__ = ["build_demo", "default_demo_root", "degrade"]
