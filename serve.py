"""Serve an exported bundle: ``python serve.py BUNDLE [--host 127.0.0.1 --port 8000]``.

The page is at ``http://HOST:PORT/``, the API's schema at ``/docs`` (and ``/openapi.json``).
Corrections sent from the page go to ``BUNDLE/feedback/`` (``--feedback DIR``); fine-tune on them
with ``python train.py fit --task NAME --data.feedback DIR --ckpt_path BUNDLE``.
"""

from __future__ import annotations

import argparse
import os
import sys

for _var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):  # a bundle needs no network
    os.environ.setdefault(_var, "1")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("bundle", help="bundle folder written by 'python train.py export'")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (0.0.0.0 exposes it to the network)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--feedback", default=None, help="feedback store folder (default: BUNDLE/feedback)")
    p.add_argument("--max-bytes", type=int, default=10 * 1024 * 1024, help="largest request body (413 above)")
    p.add_argument("--max-pixels", type=int, default=16_000_000, help="largest uploaded image or mask in pixels (413 above, checked before decoding)")
    p.add_argument("--decode-slots", type=int, default=2, help="requests decoding an image at once (memory: about slots x 8 bytes x max-pixels)")
    p.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None,
                   help="test-time augmentation: average each image's answer over its flips (Planet 8 passes, others 2); default: as the bundle (its model's tta option)")
    args = p.parse_args(argv)
    if args.decode_slots < 1 or args.max_pixels < 1 or args.max_bytes < 1:
        p.error("--decode-slots, --max-pixels and --max-bytes must be at least 1")

    import uvicorn

    from serving.app import create_app
    from serving.bundle import BundleError
    from serving.feedback import FeedbackError
    from serving.images import bound_heap

    bound_heap()  # big image buffers go back to the OS when freed (serving/images.py)

    try:
        app = create_app(args.bundle, feedback_db=args.feedback, max_bytes=args.max_bytes, max_pixels=args.max_pixels, decode_slots=args.decode_slots, tta=args.tta)
    except (BundleError, FeedbackError) as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(1) from None
    print(f"Serving {app.state.bundle.path} ({app.state.bundle.task}) on http://{args.host}:{args.port}/  (API docs: /docs)", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")


if __name__ == "__main__":
    main()
