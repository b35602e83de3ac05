"""Unpaired SR data: LR and HR image folders (AIM19 layout), random crops with flips and 90° rotations,
decoded by DataLoader workers into pinned memory; and the paired validation set.

Every problem with the data is reported before training, naming the file: a missing folder, an unreadable or
corrupt image, an image smaller than the crop, validation pairs whose names or sizes do not match.
"""

from __future__ import annotations

import random
from pathlib import Path

import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from otsr.imageio import DataError, image_size, list_images, read_image

__all__ = ["CropStream", "DataError", "RandomCrops", "check_min_size", "image_size", "list_images",
           "paired_validation", "read_image"]

def check_min_size(files: list[Path], crop: int) -> None:
    """Every image must hold a crop of side ``crop``."""
    for f in files:
        h, w = image_size(f)
        if min(h, w) < crop:
            raise DataError(f"image {f} is {h}x{w}, smaller than the crop size {crop}")


def augment(x: torch.Tensor, rng: random.Random) -> torch.Tensor:
    """Random horizontal flip and 90° rotation (the 8 symmetries of the square with a vertical flip)."""
    if rng.random() < 0.5:
        x = x.flip(-1)
    if rng.random() < 0.5:
        x = x.flip(-2)
    return torch.rot90(x, rng.randrange(4), dims=(-2, -1))


class RandomCrops(IterableDataset):
    """Endless random crops: each worker decodes an image and cuts ``crops_per_image`` crops from it."""

    def __init__(self, files: list[Path], crop: int, crops_per_image: int = 8, augment: bool = True, seed: int = 0):
        self.files, self.crop, self.per_image, self.augment, self.seed = files, crop, crops_per_image, augment, seed

    def __iter__(self):
        info = get_worker_info()
        rng = random.Random(self.seed * 1000 + (info.id if info else 0))
        while True:
            img = read_image(rng.choice(self.files))
            h, w = img.shape[-2:]
            for _ in range(self.per_image):
                y0, x0 = rng.randrange(h - self.crop + 1), rng.randrange(w - self.crop + 1)
                c = img[:, y0:y0 + self.crop, x0:x0 + self.crop]
                yield augment(c, rng) if self.augment else c


class CropStream:
    """Batches of crops as float [0, 1] tensors on a device, from a DataLoader with workers and prefetch."""

    def __init__(self, files: list[Path], crop: int, *, workers: int = 2, crops_per_image: int = 8,
                 seed: int = 0, batch: int = 64, augment: bool = True):
        self.dataset = RandomCrops(files, crop, crops_per_image, augment, seed)
        self.batch, self.workers = batch, workers
        self._loader = None
        self._iter = None
        self._buffer: torch.Tensor | None = None

    def _next_batch(self) -> torch.Tensor:
        if self._iter is None:
            self._loader = DataLoader(self.dataset, batch_size=self.batch, num_workers=self.workers,
                                      pin_memory=torch.cuda.is_available(), persistent_workers=self.workers > 0,
                                      prefetch_factor=4 if self.workers else None)
            self._iter = iter(self._loader)
        return next(self._iter)

    def take(self, n: int, device: torch.device | str) -> torch.Tensor:
        """``n`` crops as float on ``device`` (non-blocking copy from pinned memory)."""
        parts, have = [], 0
        while have < n:
            if self._buffer is None or len(self._buffer) == 0:
                self._buffer = self._next_batch()
            take = self._buffer[: n - have]
            self._buffer = self._buffer[len(take):]
            parts.append(take)
            have += len(take)
        out = torch.cat(parts) if len(parts) > 1 else parts[0]
        return out.to(device, non_blocking=True).float().div_(255)

    def __getstate__(self):  # a pair travels to Ray workers without its live DataLoader
        return {**self.__dict__, "_loader": None, "_iter": None, "_buffer": None}


def paired_validation(lr_dir: str | Path, hr_dir: str | Path, scale: int, limit: int = 0) -> list[tuple[Path, Path]]:
    """Validation pairs matched by file stem; HR must be exactly ``scale`` times the LR size."""
    lr, hr = list_images(lr_dir), list_images(hr_dir)
    hr_by_stem = {p.stem: p for p in hr}
    pairs = []
    for f in lr:
        stem = f.stem
        match = hr_by_stem.get(stem) or hr_by_stem.get(stem.replace("_lr", "_hr")) or hr_by_stem.get(
            stem.replace("LR", "HR"))
        if match is None:
            raise DataError(f"validation LR image {f} has no HR partner in {hr_dir} (same file name expected)")
        (lh, lw), (hh, hw) = image_size(f), image_size(match)
        if (hh, hw) != (lh * scale, lw * scale):
            raise DataError(f"validation pair {f} ({lh}x{lw}) and {match} ({hh}x{hw}) do not match at x{scale}")
        pairs.append((f, match))
    if len(pairs) != len(hr):
        extra = sorted({p.stem for p in hr} - {m.stem for _, m in pairs})
        raise DataError(f"validation HR images without an LR partner in {lr_dir}: {extra[:5]}")
    return pairs[:limit] if limit else pairs
