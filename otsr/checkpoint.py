"""Checkpoints: plain dicts of tensors and primitives, written atomically, read with weights_only=True
so that loading a checkpoint never runs code from it."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

CHECKPOINT_NAME = "checkpoint.pt"


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary file beside ``path`` and rename, so readers never see half a file."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def atomic_write_json(path: Path, obj: Any) -> None:
    """JSON version of ``atomic_write_bytes``."""
    atomic_write_bytes(Path(path), (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def save_checkpoint(state: dict[str, Any], path: Path) -> Path:
    """Save a checkpoint dict atomically; ``path`` may be a folder (then CHECKPOINT_NAME inside it)."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    torch.save(state, tmp)
    os.replace(tmp, path)
    return path


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint saved by ``save_checkpoint`` (file or folder), refusing pickled code."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    return torch.load(path, map_location=map_location, weights_only=True)
