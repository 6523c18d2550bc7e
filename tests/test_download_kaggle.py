"""download.py's Kaggle path (Planet) with the official client mocked at its API (``KaggleApi``):
the competition's zip and .tar.7z files into the Kaggle layout, a 403 (rules not accepted), a
missing kaggle.json, the client not installed, no network, a hostile 7z member."""

from __future__ import annotations

import shutil
import struct
import sys
import tarfile
import types
import zipfile
import zlib
from pathlib import Path

import pytest
import requests

import download as download_cli
from datamodules.download import DATASETS, KAGGLE_RULES, DownloadError, download
from test_bands import write_tifs
from test_download import datamodule
from test_planet import write_planet


# -- Kaggle (the client mocked at its API) -------------------------------------------------------
def seven_zip_of_tar(folder: Path, name: str, out: Path) -> Path:
    import py7zr

    tar_path = out.with_suffix("")  # train-jpg.tar
    with tarfile.open(tar_path, "w") as tar:
        tar.add(folder, arcname=name)
    with py7zr.SevenZipFile(out, "w") as z:
        z.write(tar_path, arcname=tar_path.name)
    tar_path.unlink()
    return out


def kaggle_files(tmp: Path, tif: bool) -> dict[str, Path]:
    """The competition's files as the server sends them: train_v2.csv zipped, images as .tar.7z."""
    src, out = tmp / "kaggle-src", tmp / "kaggle-files"
    out.mkdir(parents=True)
    folder = "train-tif-v2" if tif else "train-jpg"
    if tif:
        write_tifs(src, n=10)
    else:
        write_planet(src, "kaggle", n=10, size=32)
    with zipfile.ZipFile(out / "train_v2.csv.zip", "w") as zf:
        zf.write(src / "train_v2.csv", "train_v2.csv")
    archive = f"{folder}.tar.7z"
    return {"train_v2.csv": out / "train_v2.csv.zip", archive: seven_zip_of_tar(src / folder, folder, out / archive)}


@pytest.fixture
def fake_kaggle(monkeypatch, tmp_path):
    """Install a stand-in ``kaggle`` package (``KaggleApi`` as the real client spells it) and a token."""
    cfg = tmp_path / "kaggle-config"
    cfg.mkdir()
    (cfg / "kaggle.json").write_text('{"username": "u", "key": "k"}')
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(cfg))
    for var in ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    state = types.SimpleNamespace(files={}, error=None, calls=[])

    class KaggleApi:
        def authenticate(self):
            state.calls.append("authenticate")

        def competition_download_file(self, competition, file_name, path=None, force=False, quiet=False, unzip=False):
            state.calls.append((competition, file_name))
            if state.error is not None:
                raise state.error
            shutil.copy(state.files[file_name], Path(path) / state.files[file_name].name)

    ext = types.ModuleType("kaggle.api.kaggle_api_extended")
    ext.KaggleApi = KaggleApi
    api = types.ModuleType("kaggle.api")
    api.kaggle_api_extended = ext
    pkg = types.ModuleType("kaggle")
    pkg.api = api
    for name, mod in (("kaggle", pkg), ("kaggle.api", api), ("kaggle.api.kaggle_api_extended", ext)):
        monkeypatch.setitem(sys.modules, name, mod)
    state.config = cfg
    return state


@pytest.mark.parametrize("name", ["planet", "planet_tif"])
def test_kaggle_competition_files_extract_into_the_kaggle_layout(name, fake_kaggle, tmp_path, capsys):
    fake_kaggle.files = kaggle_files(tmp_path, tif=name == "planet_tif")
    assert download_cli.main([name, "--dest", str(tmp_path / "data")]) == 0
    root = (tmp_path / "data" / name).resolve()
    assert capsys.readouterr().out.strip().splitlines()[-1] == f"--data.init_args.root {root}"
    assert [c[1] for c in fake_kaggle.calls if c != "authenticate"] == list(DATASETS[name].kaggle_files)
    assert not list(root.glob("*.tar")) and not (tmp_path / "data" / ".downloads").exists()
    dm = datamodule(name, root)
    dm.setup("fit")
    assert len(dm.datasets["train"]) == 8 and dm.datasets["train"][0]["image"].shape[0] == (4 if name == "planet_tif" else 3)
    n = len(fake_kaggle.calls)
    download(name, tmp_path / "data", say=lambda s: None)
    assert len(fake_kaggle.calls) == n  # already present: not even authenticated


def test_kaggle_403_says_to_accept_the_rules(fake_kaggle, tmp_path):
    response = requests.Response()
    response.status_code = 403
    fake_kaggle.error = requests.HTTPError("403 Client Error: Forbidden", response=response)
    with pytest.raises(DownloadError) as e:
        download("planet", tmp_path / "data", say=lambda s: None)
    msg = str(e.value)
    assert "HTTP 403" in msg and KAGGLE_RULES in msg and "accept the competition's rules" in msg and "\n" not in msg
    assert KAGGLE_RULES == "https://www.kaggle.com/competitions/planet-understanding-the-amazon-from-space/rules"
    assert not (tmp_path / "data" / "planet").exists()


def test_missing_kaggle_json_is_one_line(fake_kaggle, tmp_path, capsys):
    (fake_kaggle.config / "kaggle.json").unlink()
    assert download_cli.main(["planet", "--dest", str(tmp_path / "data")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {fake_kaggle.config / 'kaggle.json'}: missing") and "https://www.kaggle.com/settings" in err
    assert err.count("\n") == 0 and fake_kaggle.calls == []


def test_kaggle_client_not_installed(monkeypatch, fake_kaggle, tmp_path):
    monkeypatch.setitem(sys.modules, "kaggle", None)
    monkeypatch.setitem(sys.modules, "kaggle.api", None)
    monkeypatch.setitem(sys.modules, "kaggle.api.kaggle_api_extended", None)
    with pytest.raises(DownloadError, match="pip install kaggle"):
        download("planet_tif", tmp_path / "data", say=lambda s: None)


def test_kaggle_network_failure_is_one_line(fake_kaggle, tmp_path):
    fake_kaggle.error = requests.ConnectionError("Failed to resolve 'www.kaggle.com'")
    with pytest.raises(DownloadError, match=r"Kaggle download of train_v2.csv failed \(no network\?") as e:
        download("planet", tmp_path / "data", say=lambda s: None)
    assert "\n" not in str(e.value)


def test_hostile_7z_member_is_refused(fake_kaggle, tmp_path):
    import py7zr

    files = kaggle_files(tmp_path, tif=False)
    bad = tmp_path / "bad" / "train-jpg.tar.7z"
    bad.parent.mkdir()
    with py7zr.SevenZipFile(bad, "w") as z:  # py7zr writes no '..' names: write 'xx/', patch it to '../'
        z.set_encoded_header_mode(False)
        z.writestr(b"evil", "xx/evil.txt")
    data = bytearray(bad.read_bytes())
    offset, size, _ = struct.unpack("<QQI", data[12:32])
    start = 32 + offset
    header = data[start : start + size].replace("xx/evil.txt".encode("utf-16-le"), "../evil.txt".encode("utf-16-le"))
    data[start : start + size] = header
    data[28:32] = struct.pack("<I", zlib.crc32(header))  # next-header CRC, then the start header's own
    data[8:12] = struct.pack("<I", zlib.crc32(bytes(data[12:32])))
    bad.write_bytes(bytes(data))
    files["train-jpg.tar.7z"] = bad
    fake_kaggle.files = files
    with pytest.raises(DownloadError, match="'../evil.txt' points outside the destination; refusing to extract"):
        download("planet", tmp_path / "d" / "data", say=lambda s: None)
    assert not (tmp_path / "d" / "evil.txt").exists() and not (tmp_path / "d" / "data" / "planet").exists()

