"""Latency of ``POST /predict`` per task on CPU, through real HTTP on localhost.

For each task a bundle is exported from a ``fast_dev_run`` model at the task config's input size
(Planet at 256x256, the size its recipe ends at; latency does not depend on training), or taken
from ``--bundle TASK=PATH``; the app runs under uvicorn on a free 127.0.0.1 port in this process,
and an httpx client sends ``--requests`` requests one after another (after ``--warmup`` unmeasured
ones), once serving one pass and once with test-time augmentation (``--tta``: Planet's 8 flips,
the others' 2). After each request the network alone runs once on an input of the bundle's size
(image tasks, in this process): the median of the request / forward ratios says how much of a
request is the model. Inputs: a 256x256 JPEG for
Planet (a Kaggle chip), a 960x720 JPEG for CamVid (a CamVid frame), a 640x480 JPEG for BIWI (a
Kinect frame), a 230-word review for IMDB. Start-up: a fresh process times ``import serving.app``
and ``create_app(bundle)`` (the server's own import and load, before uvicorn) and lists the
training packages it imported (none: serving needs only ``models/``).

    python benchmarks/serve_latency.py                       # all four tasks
    python benchmarks/serve_latency.py --tasks camvid --bundle camvid=runs/camvid/<time>/bundle
"""

from __future__ import annotations

import argparse
import io
import json
import os
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

for _k, _v in {"WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "NO_ALBUMENTATIONS_UPDATE": "1", "WANDB_SILENT": "true", "MPLBACKEND": "Agg"}.items():
    os.environ.setdefault(_k, _v)
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

TASKS = ("planet", "camvid", "biwi", "imdb")
EXPORT = {"planet": ["--data.init_args.size", "[256,256]"]}  # Planet's recipe ends at 256 px
IMAGE_HW = {"planet": (256, 256), "camvid": (720, 960), "biwi": (480, 640)}
REVIEW = (
    "I went in expecting very little and came out moved. The first act takes its time, but the two leads "
    "carry it with a warmth that never turns syrupy, and the score knows when to stay quiet. "
) * 6


def export(task: str, folder: Path) -> Path:
    """A bundle from a fast_dev_run model at the task config's own input size, made in another
    process (the server measured here never trained, as a real one)."""
    import subprocess

    subprocess.run([sys.executable, __file__, "--export_to", task, str(folder)], cwd=ROOT, check=True, capture_output=True)
    return folder / task


def _export_here(task: str, folder: Path) -> None:
    from train import cli_main

    common = ["--trainer.logger", "false", "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
              "--data.init_args.num_workers", "0", "--data.init_args.batch_size", "2", "--runs_dir", str(folder / "runs")]
    os.environ.pop("LESSON3_RUN_DIR", None)
    common += EXPORT.get(task, [])
    fit = cli_main(["--task", task, "--trainer.fast_dev_run", "true", *common])
    ckpt = folder / f"{task}.ckpt"
    fit.trainer.save_checkpoint(str(ckpt), weights_only=False)
    os.environ.pop("LESSON3_RUN_DIR", None)
    cli_main(["export", "--task", task, "--ckpt_path", str(ckpt), "--out", str(folder / task), *common])


def request_body(task: str) -> dict:
    if task == "imdb":
        return {"json": {"text": REVIEW}}
    h, w = IMAGE_HW[task]
    rng = np.random.default_rng(0)
    # a smooth image (compresses like a photo) with some noise
    base = np.stack(np.meshgrid(np.linspace(0, 255, w), np.linspace(0, 255, h)), -1).mean(-1)
    img = np.clip(base[..., None] + rng.normal(0, 20, (h, w, 3)), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "JPEG", quality=90)
    return {"files": {"file": ("photo.jpg", buf.getvalue(), "image/jpeg")}}


def serve(app):
    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 60
    while not server.started:
        if time.time() > deadline:
            raise RuntimeError("uvicorn did not start in 60 s")
        time.sleep(0.05)
    return server, thread, f"http://127.0.0.1:{port}"


STARTUP = """
import json, sys, time
t0 = time.perf_counter()
from serving.app import create_app
t1 = time.perf_counter()
create_app(sys.argv[1], feedback_db=sys.argv[2])
t2 = time.perf_counter()
import resource
ru = resource.getrusage(resource.RUSAGE_SELF)  # CPU seconds: steadier than wall time on a busy machine
heavy = ("pytorch_lightning", "lightning_fabric", "torchmetrics", "tasks", "datamodules", "callbacks", "matplotlib")
print(json.dumps({"import_s": round(t1 - t0, 2), "create_app_s": round(t2 - t1, 2), "cpu_s": round(ru.ru_utime + ru.ru_stime, 2),
                  "heavy": sorted({m.split(".")[0] for m in sys.modules} & set(heavy))}))
"""


def startup(bundle: Path, feedback: Path) -> dict:
    """Seconds a fresh process takes to import the server and load ``bundle`` (``STARTUP``)."""
    import subprocess

    res = subprocess.run([sys.executable, "-c", STARTUP, str(bundle), str(feedback)], cwd=ROOT, capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def forward_fn(bundle: Path):
    """One forward pass of the bundle's network on an input of its size (image tasks; None for text)."""
    import torch

    from serving.bundle import load_bundle

    b = load_bundle(bundle)
    size = b.meta["input"].get("size")
    if b.meta["input"].get("kind") == "text" or not size:
        return None
    x = torch.rand(1, 3, *size)

    def forward():
        with torch.inference_mode():
            b.net(x)

    return forward


def measure(bundle: Path, task: str, n: int, warmup: int, feedback: Path, tta: bool = False) -> dict:
    """``n`` requests after ``warmup``; after each, one forward pass of the network alone (image
    tasks): the ratio of the two is taken request by request, so that a machine whose speed
    drifts (a shared VM) compares like with like."""
    import httpx

    from serving.app import create_app

    server, thread, url = serve(create_app(bundle, feedback_db=feedback, tta=tta))
    body, forward = request_body(task), forward_fn(bundle)
    times, forwards = [], []
    try:
        with httpx.Client(base_url=url, timeout=60) as client:
            for i in range(warmup + n):
                t = time.perf_counter()
                r = client.post("/predict", **body)
                dt = time.perf_counter() - t
                if r.status_code != 200:
                    raise RuntimeError(f"{task}: HTTP {r.status_code}: {r.text[:300]}")
                if forward is not None:
                    t = time.perf_counter()
                    forward()
                    if i >= warmup:
                        forwards.append((time.perf_counter() - t) * 1000)
                if i >= warmup:
                    times.append(dt * 1000)
    finally:
        server.should_exit = True
        thread.join(10)
    meta = json.loads((bundle / "bundle.json").read_text())["input"]
    ratios = [a / b for a, b in zip(times, forwards)]
    times.sort()
    return {
        "task": task, "tta": tta, "requests": n, "median_ms": round(statistics.median(times), 1),
        "p95_ms": round(times[min(n - 1, int(np.ceil(0.95 * n)) - 1)], 1), "mean_ms": round(statistics.fmean(times), 1),
        "model_input": meta.get("size") or meta.get("max_length"),
        "forward_ms": round(statistics.median(forwards), 1) if forwards else None,
        "median_over_forward": round(statistics.median(ratios), 2) if ratios else None,
        "request": f"{IMAGE_HW[task][1]}x{IMAGE_HW[task][0]} JPEG" if task in IMAGE_HW else f"{len(REVIEW.split())}-word review",
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    p.add_argument("--bundle", action="append", default=[], metavar="TASK=PATH", help="use this bundle instead of exporting one")
    p.add_argument("--requests", type=int, default=100)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--tta", nargs="+", type=lambda v: v == "yes", default=[False, True], metavar="{no,yes}", help="serve without / with TTA (default: both)")
    p.add_argument("--out", default=None, help="also write the results as JSON here")
    p.add_argument("--export_to", nargs=2, metavar=("TASK", "DIR"), help=argparse.SUPPRESS)  # export()'s own process
    args = p.parse_args(argv)
    if args.export_to:
        return _export_here(args.export_to[0], Path(args.export_to[1]))
    given = dict(b.split("=", 1) for b in args.bundle)
    import torch

    rows = []
    with tempfile.TemporaryDirectory(prefix="serve-latency-") as tmp:
        tmp = Path(tmp)
        for task in args.tasks:
            bundle = Path(given[task]) if task in given else export(task, tmp)
            up = startup(bundle, tmp / f"feedback-{task}")
            rows += [measure(bundle, task, args.requests, args.warmup, tmp / f"feedback-{task}", tta) | up for tta in args.tta]
    print(f"\nPOST /predict latency over HTTP on localhost, CPU ({torch.get_num_threads()} torch threads), {args.requests} sequential requests")
    print("| task | request | model input | TTA | median ms | p95 ms | network forward ms | request / forward (median) | import s | create_app s | start-up CPU s | training packages imported |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        heavy = ", ".join(r["heavy"]) or "none"
        print(f"| {r['task']} | {r['request']} | {r['model_input']} | {'yes' if r['tta'] else 'no'} | {r['median_ms']} | {r['p95_ms']} | {r['forward_ms'] or '-'} | "
              f"{r['median_over_forward'] or '-'} | {r['import_s']} | {r['create_app_s']} | {r['cpu_s']} | {heavy} |")
    if args.out:
        Path(args.out).write_text(json.dumps({"threads": torch.get_num_threads(), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
