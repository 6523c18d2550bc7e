"""Download a real dataset into the layout its datamodule reads: ``python download.py NAME --dest DIR``.

``python download.py --list`` names them. The last line printed is the ``--data.init_args.root``
to pass to ``train.py``. Errors are one line (``error: ...``, exit status 1).
"""

from __future__ import annotations

import argparse
import sys

from datamodules.download import DATASETS, MIRROR_ENV, DownloadError, download


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="datasets:\n" + "\n".join(f"  {d.name:14s} {d.description}" for d in DATASETS.values()))
    p.add_argument("name", nargs="?", help="dataset to fetch (see the list below)")
    p.add_argument("--dest", default="data", help="folder the dataset folder is made in (default: data)")
    p.add_argument("--list", action="store_true", help="list the datasets and exit")
    p.add_argument("--test", action="store_true", help="Kaggle Planet: also the competition's test images")
    p.add_argument("--keep-archive", action="store_true", help="keep the downloaded archive in DEST/.downloads")
    p.add_argument("--retries", type=int, default=3, help="tries when the connection is cut, each resuming the last (default 3)")
    p.add_argument("--mirror", default=None, help=f"base URL serving the same archive file names (also ${MIRROR_ENV})")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.list or not args.name:
        for d in DATASETS.values():
            print(f"{d.name:14s} --task {d.task:11s} {d.description}")
        return 0 if args.list else 2
    try:
        path = download(args.name, args.dest, mirror=args.mirror, keep_archive=args.keep_archive, retries=args.retries,
                        progress=not args.no_progress, test=args.test)
    except DownloadError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: what was downloaded is kept; run the same command again to resume.", file=sys.stderr)
        return 130
    print(f"Train: python train.py --task {DATASETS[args.name].task} --data.init_args.root {path}")
    print(f"--data.init_args.root {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
