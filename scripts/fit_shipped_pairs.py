"""Fit the icnn-mixture pairs that ship with the package and write them to otsr/pairs/fitted.

The shipped set is what the tests, the quality bench and bench/gpu_check.sh build: D = 4 and 16 at seed 0 (the
tests' small and default pairs), D = 4 at seed 1 (the GPU check's dry run), D = 16 and 64 at the held-out seeds
1-3 (D = 128 is left to fit: 0.7 MB, and its runs take hours). Run it after changing the fit (and bumping
FIT_VERSION); tests/otsr_tests/test_pairs.py fails while a shipped file is stale.

    .venv/bin/python scripts/fit_shipped_pairs.py                        # all of them, into the package
    .venv/bin/python scripts/fit_shipped_pairs.py --only 4:0 --out DIR   # one, elsewhere (the test does this)
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = [(4, 0), (4, 1), (16, 0), (16, 1), (16, 2), (16, 3), (64, 1), (64, 2), (64, 3)]  # (dim, seed)


def main() -> None:
    """Fit each parameter set in an empty cache (so nothing stale is reused) and copy its file out."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", help="DIM:SEED, one parameter set instead of the shipped list")
    ap.add_argument("--out", type=Path, default=ROOT / "otsr" / "pairs" / "fitted")
    a = ap.parse_args()
    todo = [tuple(int(v) for v in a.only.split(":"))] if a.only else SHIPPED
    sys.path.insert(0, str(ROOT))
    with tempfile.TemporaryDirectory() as cache:
        os.environ["OTSR_CACHE"] = cache
        from otsr.pairs import _icnn

        _icnn.SHIPPED_DIR = Path(cache) / "none"  # fit every one afresh, never load an old shipped file
        a.out.mkdir(parents=True, exist_ok=True)
        if not a.only:
            for old in a.out.glob("icnn-mixture-*.pt"):
                old.unlink()
        for dim, seed in todo:
            pair = _icnn.ICNNMixture(dim=dim, seed=seed)
            shutil.copyfile(pair.cache_path(), a.out / pair.cache_path().name)
            print(f"icnn-mixture D={dim} seed={seed}: {pair.cache_path().name}", flush=True)


if __name__ == "__main__":
    main()
