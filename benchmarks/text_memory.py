"""Peak memory and time of one masked-LM training step of the text backbone, per attention dropout.

    python benchmarks/text_memory.py [--batch 16] [--length 512] [--dropouts 0.1 0.0]

Each setting runs in its own process (peak RSS is per process): load ``TransformerMLM``, set
``attention_dropout``, one forward + backward on random token ids with 15% of positions masked.
Backs the numbers in ``models/hf.py`` and ``configs/imdb.yaml`` (why the IMDB configs use 0.0).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def one(p: float | None, batch: int, length: int) -> dict:
    import torch

    from models.text import TransformerMLM

    torch.manual_seed(0)
    net = TransformerMLM(attention_dropout=p)
    ids = torch.randint(1000, 20000, (batch, length))
    labels = torch.full_like(ids, -100)
    sel = torch.rand(ids.shape) < 0.15
    labels[sel] = ids[sel]
    loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    t0 = time.perf_counter()
    loss = torch.nn.functional.cross_entropy(net(ids, torch.ones_like(ids), labels), labels[sel])
    loss.backward()
    return {"attention_dropout": p, "step_s": time.perf_counter() - t0, "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6,
            "after_load_gb": loaded}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--length", type=int, default=512)
    ap.add_argument("--dropouts", type=float, nargs="+", default=[0.1, 0.0])
    ap.add_argument("--one", type=float, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one is not None:
        print(json.dumps(one(args.one, args.batch, args.length)))
        return 0
    print(f"masked-LM step, batch {args.batch} x {args.length} tokens")
    for p in args.dropouts:
        out = subprocess.run([sys.executable, __file__, "--one", str(p), "--batch", str(args.batch), "--length", str(args.length)],
                             cwd=ROOT, capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"  attention_dropout {p}: peak RSS {r['peak_rss_gb']:.2f} GB (after load {r['after_load_gb']:.2f}), step {r['step_s']:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
