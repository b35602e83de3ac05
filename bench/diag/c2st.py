"""A classifier two-sample test of SR maps: how well a small convnet, trained on half of T(LR) against half of HR,
tells the other halves apart (held-out AUC: 0.5 = indistinguishable). Unlike the high-pass Fréchet bias, which
compares second moments of 8x8 high-pass patches and is lowered by adding white noise, a classifier sees noise.

    python bench/diag/c2st.py --out c2st.json [--checkpoint NAME=runs/x/checkpoint.pt ...] [--noise 0.01 ...]
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn.functional as F
from torch import nn

from otsr.bench.potential_check import separation_auc
from otsr.cli import split_settings
from otsr.evaluation import EVAL_SEED, probe_map
from otsr.pairs import make_pair
from otsr.sampling import draw, draw_q
from otsr.sr.upscale import load_map


def classifier() -> nn.Module:
    """A small convnet scoring a (3, H, W) image: real (HR) high, generated low."""
    return nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.LeakyReLU(0.2), nn.Conv2d(32, 32, 3, padding=1),
                         nn.LeakyReLU(0.2), nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.LeakyReLU(0.2),
                         nn.Conv2d(64, 64, 3, stride=2, padding=1), nn.LeakyReLU(0.2), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(64, 1))


def c2st_auc(fake: torch.Tensor, real: torch.Tensor, steps: int, seed: int = 0) -> float:
    """Train on the first halves for ``steps`` (batch 128, Adam 1e-3), return the AUC on the second halves."""
    torch.manual_seed(seed)
    net, half = classifier(), len(fake) // 2
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        i, j = torch.randint(0, half, (64,), generator=g), torch.randint(0, half, (64,), generator=g)
        logits = net(torch.cat([real[i], fake[j]])).squeeze(1)
        labels = torch.cat([torch.ones(64), torch.zeros(64)])
        loss = F.binary_cross_entropy_with_logits(logits, labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return separation_auc(net(real[half:]).squeeze(1), net(fake[half:]).squeeze(1))


def main() -> None:
    """Score bicubic, bicubic plus white noise and each checkpoint's map on the same samples."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--param", action="append", default=["root=demo", "hr_crop=32"], help="sr-folders parameter")
    ap.add_argument("--checkpoint", action="append", default=[], help="NAME=path of an SR run's checkpoint")
    ap.add_argument("--noise", action="append", type=float, default=[], help="white-noise sigma added to bicubic")
    ap.add_argument("--n", type=int, default=4096)
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--out", required=True)
    ap.add_argument("--skip-baselines", action="store_true", help="leave out the bicubic and HR-vs-HR rows "
                    "(their figures depend only on the pair, --n, --steps and --seeds)")
    a = ap.parse_args()
    torch.set_num_threads(1)
    params, settings = split_settings("sr-folders", a.param)
    if settings:
        raise ValueError(f"--param takes sr-folders parameters only, not {sorted(settings)}")
    pair = make_pair("sr-folders", **params)
    g = torch.Generator().manual_seed(EVAL_SEED - 11)
    with pair.evaluation_samples(EVAL_SEED - 11):
        x, y = draw(pair, a.n, g, False)[0], draw_q(pair, a.n, g)
    bicubic = probe_map(pair)
    maps = {} if a.skip_baselines else {"bicubic": bicubic, "hr_vs_hr": None}
    for s in a.noise:
        maps[f"bicubic+noise{s:g}"] = (lambda s: lambda z: (b := bicubic(z)) + s * torch.randn(
            b.shape, generator=torch.Generator().manual_seed(5)))(s)
    for spec in a.checkpoint:
        name, path = spec.split("=", 1)
        maps[name] = load_map(path)[0]
    rows = {}
    for name, t in maps.items():
        t0 = time.process_time()
        with torch.no_grad():
            if t is None:  # the floor: HR against an independent HR sample
                fake = draw_q(pair, a.n, torch.Generator().manual_seed(EVAL_SEED - 12))
            else:
                fake = torch.cat([t(c) for c in x.split(256)]).clamp(0, 1)
        aucs = [c2st_auc(fake, y, a.steps, seed) for seed in range(a.seeds)]
        rows[name] = {"auc": aucs, "auc_mean": sum(aucs) / len(aucs), "cpu_s": round(time.process_time() - t0, 1)}
        print(name, json.dumps(rows[name]), flush=True)
    json.dump({"pair": pair.spec().to_dict(), "n": a.n, "steps": a.steps, "rows": rows}, open(a.out, "w"), indent=1)


if __name__ == "__main__":
    main()
