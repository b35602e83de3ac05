"""Image files: listing a folder, reading headers and decoding, with errors that name the folder or file."""

from __future__ import annotations

from pathlib import Path

import torch

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


class DataError(ValueError):
    """A dataset problem; the message names the folder or file."""


def list_images(folder: str | Path) -> list[Path]:
    """Image files of a folder, sorted; errors for a missing or empty folder."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"image folder {folder} does not exist")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataError(f"image folder {folder} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    return files


def image_size(path: Path) -> tuple[int, int]:
    """(height, width) from the file header; a corrupt file raises naming it."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.verify()
        with Image.open(path) as im:
            w, h = im.size
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise DataError(f"cannot read image {path}: {e}") from None
    return h, w


def read_image(path: Path) -> torch.Tensor:
    """RGB uint8 tensor (3, H, W); a file that fails to decode raises naming it."""
    from torchvision.io import ImageReadMode, decode_image

    try:
        return decode_image(str(path), mode=ImageReadMode.RGB)
    except RuntimeError as e:
        raise DataError(f"cannot decode image {path}: {e}") from None
