"""Where and in what precision a run computes: device resolution, CPU threads and the per-model precision choice."""

from __future__ import annotations

import os

import torch

from otsr.models import CONV_MODELS


def resolve_device(name: str) -> torch.device:
    """'auto' -> cuda when available, else cpu; other names are passed to torch (errors name the device)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ValueError(f"config key 'device': {name!r} is not a device (valid: auto, cpu, cuda, cuda:N)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"config key 'device': {name!r} requested but CUDA is not available")
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"config key 'device': {name!r} is not supported (valid: auto, cpu, cuda, cuda:N)")
    return dev


def default_threads() -> int:
    """Torch threads of a run that asks for none: $OMP_NUM_THREADS when set, else 1.

    Torch's own default (one thread per physical core) stalls as soon as another process holds a core: its
    threads wait for each other at every operation. On a 2-core machine already busy (load average 4-7), a D = 16
    OTS run made 1.6 steps/s on 2 threads and 21.8 on 1, and beside one more CPU hog 0.84 and 9.6; the small MLPs
    gain little from a second thread on an idle machine (``otsr bench --bundle``: 25.3 steps/s on 2 threads, 25.4
    on 1).
    """
    env = os.environ.get("OMP_NUM_THREADS", "")
    return int(env) if env.isdigit() and int(env) > 0 else 1


def set_threads(n: int | None) -> int:
    """Use ``n`` torch threads (``default_threads()`` when None); returns the number set."""
    n = default_threads() if n is None else n
    if n < 1:
        raise ValueError(f"--threads {n}: must be at least 1")
    torch.set_num_threads(n)
    return n


def resolve_precision(precision: str, model: str, device: torch.device, reference_habits: bool = False) -> str:
    """'bf16' or 'fp32' for one network.

    'auto' picks bf16 only where it was measured to pay and to keep the answer: convolutional nets on CUDA.
    MLPs stay fp32 (bf16 made the MLP steps slower on an H100 and, before the networks worked in the data's
    units, broke OTS: 247 % vs 7 % L2-UVP). Bases, potential values, costs, losses and the gradient penalty's
    arithmetic are fp32 whatever this says (see ``otsr.models``).
    """
    if reference_habits or precision == "fp32":
        return "fp32"
    if precision == "bf16":
        return "bf16"
    return "bf16" if device.type == "cuda" and model in CONV_MODELS else "fp32"


def autocast_dtype(precision: str) -> torch.dtype | None:
    """The autocast dtype of a resolved precision (None: plain fp32)."""
    return torch.bfloat16 if precision == "bf16" else None
