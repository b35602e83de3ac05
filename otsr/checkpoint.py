"""Checkpoint files: plain dicts of tensors and primitives, written atomically, read with weights_only=True so
that loading a checkpoint never runs code from it; a file that is not an otsr checkpoint is refused by name."""

from __future__ import annotations

import errno
import json
import os
import pickle
import shutil
import zipfile
from pathlib import Path
from typing import Any

import torch

CHECKPOINT_NAME = "checkpoint.pt"
REQUIRED_KEYS = ("config", "pair", "step", "map", "critic")


class CheckpointError(ValueError):
    """A checkpoint cannot be used; the message names the file and why."""


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary file beside ``path`` and rename, so readers never see half a file."""
    atomic_write(Path(path), lambda tmp: tmp.write_bytes(data))


def atomic_write(path: Path, write) -> None:
    """``write(tmp)`` a temporary file beside ``path``, then rename it over ``path`` (readers never see half a file);
    a failed write leaves no temporary file behind, and a full disk is reported as such (torch's writer says only
    "iostream error"). The one place files are written atomically."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if isinstance(e, (OSError, RuntimeError)) and shutil.disk_usage(path.parent).free < (1 << 20):
            raise OSError(errno.ENOSPC, "No space left on device", str(path)) from None
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    """JSON version of ``atomic_write_bytes``."""
    atomic_write_bytes(Path(path), (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def save_checkpoint(state: dict[str, Any], path: Path) -> Path:
    """Save a checkpoint dict atomically; ``path`` may be a folder (then CHECKPOINT_NAME inside it)."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    atomic_write(path, lambda tmp: torch.save(state, tmp))
    return path


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint saved by ``save_checkpoint`` (file or folder), refusing pickled code.

    Raises CheckpointError naming the file for a missing, truncated, foreign or code-carrying file.
    """
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        if "Unsupported global" in str(e) or "GLOBAL" in str(e):
            raise CheckpointError(f"checkpoint {path} holds Python objects beyond tensors and plain values "
                                  f"(it may carry code); otsr will not load it") from None
        raise CheckpointError(f"checkpoint {path} is not a checkpoint file (corrupt, truncated or not written by "
                              "otsr)") from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as e:
        raise CheckpointError(f"checkpoint {path} is truncated or corrupt: "
                              f"{(str(e).splitlines() or [type(e).__name__])[0]}") from None
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"checkpoint {path} holds {type(ckpt).__name__}, not an otsr checkpoint")
    missing = [k for k in REQUIRED_KEYS if k not in ckpt]
    if missing:
        raise CheckpointError(f"checkpoint {path} is not an otsr checkpoint (missing {', '.join(missing)})")
    if isinstance(ckpt["config"], dict):  # as this release reads it (checkpoints of earlier releases too)
        from otsr.config import stored_config

        ckpt["config"] = stored_config(ckpt["config"])
    return ckpt


def load_weights(path: str | Path, what: str) -> dict:
    """A pretrained network's state dict from a local weights file (``weights_only``: loading never runs code
    from it; nothing is downloaded)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} weights not found at {path} (give a local file; nothing is downloaded)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"{what} weights file {path} cannot be read as a state dict: {e}") from None
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    if not isinstance(state, dict):
        raise ValueError(f"{what} weights file {path} holds {type(state).__name__}, not a state dict")
    return state
