"""The Planet competition files through the official ``kaggle`` client (imported only when used).

Needs an API token (``~/.kaggle/kaggle.json``, ``$KAGGLE_CONFIG_DIR``, or ``KAGGLE_USERNAME`` +
``KAGGLE_KEY`` / ``KAGGLE_API_TOKEN``) and the competition's rules accepted on the website: Kaggle
answers 403 otherwise, which is said with the rules page to visit. The client downloads (and
resumes) each file; a ``NAME.done`` file beside it records that its download finished.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Callable

from .fetch import DownloadError
from .registry import KAGGLE_COMPETITION, KAGGLE_RULES, Dataset


def credentials_file() -> Path:
    return Path(os.environ.get("KAGGLE_CONFIG_DIR") or Path.home() / ".kaggle") / "kaggle.json"


def has_credentials() -> bool:
    env = os.environ
    folder = credentials_file().parent
    return (
        credentials_file().is_file()
        or (folder / "access_token").is_file()
        or bool(env.get("KAGGLE_USERNAME") and env.get("KAGGLE_KEY"))
        or bool(env.get("KAGGLE_API_TOKEN"))
    )


def kaggle_api():
    """An authenticated ``KaggleApi``.

    Raises:
        DownloadError: no credentials (with how to get them), the client not installed, or
            credentials the client rejects.
    """
    cred = credentials_file()
    if not has_credentials():
        raise DownloadError(
            f"{cred}: missing. The Planet competition data comes through the Kaggle API: create a token at "
            f"https://www.kaggle.com/settings (API, Create New Token), save it as {cred} (chmod 600), accept the "
            f"rules at {KAGGLE_RULES}, and run again."
        )
    try:
        from kaggle.api.kaggle_api_extended import KaggleApi
    except ImportError as e:
        raise DownloadError("the Kaggle competition data needs the official client: pip install kaggle") from e
    api = KaggleApi()
    try:
        api.authenticate()
    except (SystemExit, Exception) as e:  # the client exits when it finds no usable credentials
        raise DownloadError(f"{cred}: the Kaggle client could not authenticate with these credentials ({_reason(e)}).") from None
    return api


def _reason(e: BaseException) -> str:
    return " ".join(str(e).split())[:160] or type(e).__name__


def _status(e: BaseException) -> int | None:
    """HTTP status of a client error: requests' ``HTTPError`` (kaggle 2.x) or ``ApiException`` (1.x)."""
    response = getattr(e, "response", None)
    code = getattr(response, "status_code", None) if response is not None else None
    return code if code is not None else getattr(e, "status", None)


def _explain(e: BaseException, name: str) -> DownloadError:
    code = _status(e)
    if code == 403:
        return DownloadError(
            f"Kaggle refused {name} (HTTP 403): accept the competition's rules first at {KAGGLE_RULES}, "
            f"signed in as the account of {credentials_file()}, then run again."
        )
    if code == 401:
        return DownloadError(f"Kaggle rejected the credentials in {credentials_file()} (HTTP 401): create a new token at https://www.kaggle.com/settings.")
    if code is not None:
        return DownloadError(f"Kaggle download of {name} failed: HTTP {code} ({_reason(e)}).")
    if isinstance(e, OSError) and e.errno == errno.ENOSPC:
        raise e  # a full disk: reported by the caller
    return DownloadError(f"Kaggle download of {name} failed (no network? {type(e).__name__}: {_reason(e)}); run again to resume.")


def downloaded(folder: Path, name: str) -> Path | None:
    """The finished download of competition file ``name`` (the server may wrap it as ``name.zip``)."""
    if not (folder / f"{name}.done").is_file():
        return None
    for candidate in (folder / name, folder / f"{name}.zip"):
        if candidate.is_file():
            return candidate
    return None


def fetch_kaggle(ds: Dataset, folder: Path, test: bool = False, progress: bool = True, say: Callable[[str], None] = print) -> list[Path]:
    """Download the dataset's competition files into ``folder``; the paths of the files.

    Raises:
        DownloadError: see :func:`kaggle_api` and the module docstring.
    """
    names = list(ds.kaggle_files) + (list(ds.kaggle_test_files) if test else [])
    folder.mkdir(parents=True, exist_ok=True)
    todo = [n for n in names if downloaded(folder, n) is None]
    api = kaggle_api() if todo else None
    out = []
    for name in names:
        if name in todo:
            say(f"{ds.name}: {name} from Kaggle ({KAGGLE_COMPETITION})")
            try:
                api.competition_download_file(KAGGLE_COMPETITION, name, path=str(folder), quiet=not progress)
            except (SystemExit, Exception) as e:
                raise _explain(e, name) from None
            if not any((folder / n).is_file() for n in (name, f"{name}.zip")):
                raise DownloadError(f"{folder}: the Kaggle client reported {name} downloaded but wrote neither {name} nor {name}.zip.")
            (folder / f"{name}.done").touch()
        out.append(downloaded(folder, name))
    return out
