"""Download tool, offline: checksums, atomic pooch downloads from a local HTTP server on 127.0.0.1, safe
extraction of zip and tar archives built here (including a bad checksum, a bad CRC and path-traversal
members), and the CLI."""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import json
import re
import socket
import tarfile
import threading
import zipfile
from pathlib import Path

import pytest

from srlib.data import download as dl
from srlib.data.download import (
    Archive,
    ChecksumError,
    UnsafeArchiveError,
    div2k_archives,
    download_file,
    fetch,
    safe_extract,
    verify_checksum,
)


def _zip(path, members: dict[str, bytes]):
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def _tar(path, members: dict[str, bytes], mode="w"):
    with tarfile.open(path, mode) as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


def _files(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def served(tmp_path):
    """``(folder, url_of)``: files written into ``folder`` are served at ``url_of(name)`` by a local HTTP server."""
    folder = tmp_path / "served"
    folder.mkdir()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield folder, lambda name: f"http://127.0.0.1:{server.server_address[1]}/{name}"
    finally:
        server.shutdown()
        server.server_close()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens there once the socket is closed


# ----------------------------------------------------------------------------- checksums
def test_verify_checksum(tmp_path):
    f = tmp_path / "data.bin"
    f.write_bytes(b"super-resolution")
    sha, md5 = hashlib.sha256(b"super-resolution").hexdigest(), hashlib.md5(b"super-resolution").hexdigest()
    assert verify_checksum(f, sha256=sha, md5=md5) == {"sha256": sha, "md5": md5}
    assert verify_checksum(f, sha256=sha.upper())["sha256"] == sha
    with pytest.raises(ChecksumError, match=rf"data\.bin: sha256 mismatch, expected {'0' * 64}, got {sha}"):
        verify_checksum(f, sha256="0" * 64)
    with pytest.raises(ChecksumError, match="md5 mismatch"):
        verify_checksum(f, md5="f" * 32)
    with pytest.raises(FileNotFoundError, match="nothing"):
        verify_checksum(tmp_path / "nothing")
    assert issubclass(ChecksumError, ValueError) and issubclass(UnsafeArchiveError, ValueError)


# ----------------------------------------------------------------------------- download
def test_download_file_is_atomic(tmp_path, served):
    folder, url = served
    payload = bytes(range(256)) * 5000
    (folder / "src.bin").write_bytes(payload)
    sha = hashlib.sha256(payload).hexdigest()
    dest = tmp_path / "out" / "copy.bin"
    assert download_file(url("src.bin"), dest, sha256=sha, progress=False) == dest
    assert dest.read_bytes() == payload
    assert _files(tmp_path / "out") == ["copy.bin"]  # no temporary file left
    (folder / "src.bin").write_bytes(b"changed")  # a file that already has the known hash is not fetched again
    assert download_file(url("src.bin"), dest, sha256=sha, progress=False).read_bytes() == payload


def test_download_bad_checksum_keeps_nothing(tmp_path, served):
    folder, url = served
    (folder / "src.bin").write_bytes(b"abc")
    out = tmp_path / "out"
    with pytest.raises(ChecksumError, match=f"a.bin: sha256 mismatch, expected {'1' * 64}"):
        download_file(url("src.bin"), out / "a.bin", sha256="1" * 64, progress=False)
    assert _files(out) == []
    # an existing file is left untouched by a failed download
    (out / "a.bin").write_bytes(b"old")
    with pytest.raises(ChecksumError, match="md5 mismatch"):
        download_file(url("src.bin"), out / "a.bin", md5="2" * 32, progress=False)
    assert (out / "a.bin").read_bytes() == b"old" and _files(out) == ["a.bin"]


def test_download_failure_removes_partial_file(tmp_path, served):
    _, url = served
    out = tmp_path / "out"
    with pytest.raises(OSError, match=r"missing.zip: the server answered HTTP 404"):
        download_file(url("missing.zip"), out / "x.zip", progress=False)
    assert _files(out) == []


def test_download_without_network_is_one_clear_sentence(tmp_path):
    url = f"http://127.0.0.1:{_closed_port()}/benchmark.tar"
    with pytest.raises(ConnectionError) as err:
        download_file(url, tmp_path / "out" / "benchmark.tar", progress=False, timeout=5)
    message = str(err.value)
    assert message.startswith(f"cannot download {url}: there is no network connection or the server cannot be reached")
    assert "\n" not in message and message.count(". ") == 0
    assert _files(tmp_path / "out") == []


def test_download_refuses_schemes_pooch_cannot_read(tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(b"x")
    with pytest.raises(ValueError, match="cannot download 'file://"):
        download_file(src.as_uri(), tmp_path / "d.bin", progress=False)


def test_download_without_checksum_warns_with_digest(tmp_path, served):
    folder, url = served
    (folder / "src.bin").write_bytes(b"xyz")
    sha = hashlib.sha256(b"xyz").hexdigest()
    with pytest.warns(UserWarning, match=f"no published checksum.*sha256={sha}"):
        download_file(url("src.bin"), tmp_path / "d.bin", progress=False)
    assert (tmp_path / "d.bin").read_bytes() == b"xyz"


# ----------------------------------------------------------------------------- extraction
def test_safe_extract_zip_and_merge(tmp_path):
    a = _zip(tmp_path / "a.zip", {"DIV2K_train_LR_bicubic/X2/0001x2.png": b"one", "top.txt": b"t"})
    b = _zip(tmp_path / "b.zip", {"DIV2K_train_LR_bicubic/X3/0001x3.png": b"three", "top.txt": b"T"})
    c = _zip(tmp_path / "c.zip", {"DIV2K_train_LR_bicubic/X4/0001x4.png": b"four", "top.txt": b"t"})
    dest = tmp_path / "dest"
    assert [p.name for p in safe_extract(a, dest)] == ["0001x2.png", "top.txt"]
    # a file of the user's with another content is never replaced unless asked: nothing at all is moved
    with pytest.raises(dl.DownloadConflictError, match=r"1 file\(s\) already exist.*dest/top\.txt.*never overwrites"):
        safe_extract(b, dest)
    assert _files(dest) == ["DIV2K_train_LR_bicubic/X2/0001x2.png", "top.txt"]
    assert (dest / "top.txt").read_bytes() == b"t"
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # staging removed
    safe_extract(c, dest)  # the same content is kept as it is; the rest merges into the existing folder
    safe_extract(b, dest, replace=True)  # asked: merges, replaces the file
    assert _files(dest) == ["DIV2K_train_LR_bicubic/X2/0001x2.png", "DIV2K_train_LR_bicubic/X3/0001x3.png",
                            "DIV2K_train_LR_bicubic/X4/0001x4.png", "top.txt"]
    assert (dest / "top.txt").read_bytes() == b"T"
    assert (dest / "DIV2K_train_LR_bicubic/X3/0001x3.png").read_bytes() == b"three"
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # staging removed
    (dest / "folder.txt").mkdir()  # a folder where a file goes is refused even with replace
    with pytest.raises(dl.DownloadConflictError, match="folder.txt"):
        safe_extract(_zip(tmp_path / "d.zip", {"folder.txt": b"x"}), dest, replace=True)


def test_cli_edsr_archive_never_overwrites_a_users_file(tmp_path, monkeypatch, served, capsys):
    folder, url = served
    _tar(folder / "benchmark.tar", {"benchmark/Set5/HR/baby.png": b"hr", "benchmark/Set5/LR_bicubic/X2/babyx2.png": b"lr"})
    monkeypatch.setattr(dl, "BENCHMARK_SOURCES", {"edsr": Archive(url("benchmark.tar"), "benchmark.tar", "")})
    root = tmp_path / "data"
    (root / "benchmark" / "Set5" / "HR").mkdir(parents=True)
    (root / "benchmark" / "Set5" / "HR" / "baby.png").write_bytes(b"mine")
    with pytest.warns(UserWarning, match="no published checksum"):
        assert dl.main(["benchmark", "--root", str(root), "--no-progress"]) == 1
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error")]
    assert len(err) == 1 and "benchmark.tar" in err[0] and "baby.png" in err[0] and "nothing was extracted" in err[0]
    assert _files(root) == ["benchmark/Set5/HR/baby.png"]  # no archive, no archives/ folder, the user's file as it was
    assert (root / "benchmark" / "Set5" / "HR" / "baby.png").read_bytes() == b"mine"


@pytest.mark.parametrize("mode,suffix", [("w", ".tar"), ("w:gz", ".tar.gz")])
def test_safe_extract_tar(tmp_path, mode, suffix):
    arc = _tar(tmp_path / f"bench{suffix}", {"benchmark/Set5/HR/baby.png": b"png", "./benchmark/readme": b"r"}, mode)
    dest = tmp_path / "data"
    safe_extract(arc, dest)
    assert _files(dest) == ["benchmark/Set5/HR/baby.png", "benchmark/readme"]


@pytest.mark.parametrize("evil", ["../evil.txt", "ok/../../evil.txt", "/tmp/srlib_evil_abs.txt", "C:/evil.txt", "..\\evil.txt"])
@pytest.mark.parametrize("kind", ["zip", "tar"])
def test_safe_extract_refuses_traversal(tmp_path, evil, kind):
    dest = tmp_path / "dest"
    members = {"good/first.txt": b"fine", evil: b"pwned"}
    arc = _zip(tmp_path / "x.zip", members) if kind == "zip" else _tar(tmp_path / "x.tar", members)
    with pytest.raises(UnsafeArchiveError, match="x\\.(zip|tar): member"):
        safe_extract(arc, dest)
    assert _files(dest) == []  # nothing extracted, not even the good member
    assert not (tmp_path / "evil.txt").exists() and not any(tmp_path.rglob("evil.txt"))


@pytest.mark.parametrize("link", ["sym", "hard"])
def test_safe_extract_refuses_links(tmp_path, link):
    arc = tmp_path / "links.tar"
    with tarfile.open(arc, "w") as tf:
        info = tarfile.TarInfo("data/escape")
        info.type = tarfile.SYMTYPE if link == "sym" else tarfile.LNKTYPE
        info.linkname = "/etc/passwd"
        tf.addfile(info)
    with pytest.raises(UnsafeArchiveError, match="is a link"):
        safe_extract(arc, tmp_path / "dest")
    assert _files(tmp_path / "dest") == []


def test_safe_extract_errors(tmp_path):
    (tmp_path / "plain.txt").write_text("not an archive")
    with pytest.raises(ValueError, match="not a zip or tar"):
        safe_extract(tmp_path / "plain.txt", tmp_path / "d")
    with pytest.raises(FileNotFoundError):
        safe_extract(tmp_path / "none.zip", tmp_path / "d")


def test_safe_extract_rejects_a_bad_crc(tmp_path):
    arc = _zip(tmp_path / "crc.zip", {"a/first.txt": b"fine", "a/second.txt": b"payload-payload"})
    raw = bytearray(arc.read_bytes())
    at = raw.index(b"payload-payload")  # stored uncompressed: flip one data byte, the CRC no longer matches
    raw[at] ^= 0xFF
    arc.write_bytes(bytes(raw))
    with pytest.raises(zipfile.BadZipFile, match="CRC"):
        safe_extract(arc, tmp_path / "dest")
    assert _files(tmp_path / "dest") == []  # not even the good member


# ----------------------------------------------------------------------------- fetch + CLI
def test_fetch_verifies_before_extracting(tmp_path, served):
    folder, url = served
    arc = _zip(folder / "DIV2K_valid_HR.zip", {"DIV2K_valid_HR/0801.png": b"img"})
    sha = hashlib.sha256(arc.read_bytes()).hexdigest()
    root = tmp_path / "root"
    bad = Archive(url(arc.name), "DIV2K_valid_HR.zip", "DIV2K", sha256="3" * 64)
    with pytest.raises(ChecksumError):
        fetch(bad, root, progress=False)
    assert _files(root) == []  # nothing downloaded, nothing extracted
    good = Archive(url(arc.name), "DIV2K_valid_HR.zip", "DIV2K", sha256=sha)
    assert fetch(good, root, progress=False) == root / "DIV2K"
    assert _files(root) == ["DIV2K/DIV2K_valid_HR/0801.png"]  # archive removed after extraction
    fetch(good, root, keep_archive=True, progress=False)
    assert (root / "archives" / "DIV2K_valid_HR.zip").is_file()


def test_div2k_archives():
    archives = div2k_archives()
    names = [a.filename for a in archives]
    assert names == [
        "DIV2K_train_HR.zip", "DIV2K_train_LR_bicubic_X2.zip", "DIV2K_train_LR_bicubic_X3.zip",
        "DIV2K_train_LR_bicubic_X4.zip", "DIV2K_valid_HR.zip", "DIV2K_valid_LR_bicubic_X2.zip",
        "DIV2K_valid_LR_bicubic_X3.zip", "DIV2K_valid_LR_bicubic_X4.zip",
    ]
    assert archives[0].url == "https://data.vision.ee.ethz.ch/cvl/DIV2K/DIV2K_train_HR.zip"
    assert all(a.subdir == "DIV2K" for a in archives)
    for a in archives + list(dl.BENCHMARK_SOURCES.values()):  # unknown checksums are None, never guessed
        assert a.sha256 is None or len(a.sha256) == 64
    assert [a.filename for a in div2k_archives(["valid"], [4], hr=False)] == ["DIV2K_valid_LR_bicubic_X4.zip"]
    with pytest.raises(ValueError, match="unsupported scale 8"):
        div2k_archives(scales=[8])


def test_cli_dry_run(tmp_path, capsys):
    assert dl.main(["div2k", "--root", str(tmp_path), "--scales", "2", "--splits", "valid", "--dry-run"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [
        f"https://data.vision.ee.ethz.ch/cvl/DIV2K/DIV2K_valid_HR.zip -> {tmp_path / 'DIV2K'}  (sha256=None, md5=None)",
        f"https://data.vision.ee.ethz.ch/cvl/DIV2K/DIV2K_valid_LR_bicubic_X2.zip -> {tmp_path / 'DIV2K'}  (sha256=None, md5=None)",
    ]
    with pytest.raises(SystemExit):
        dl.main(["imagenet"])


def test_cli_benchmark_end_to_end(tmp_path, monkeypatch, served):
    """``benchmark`` (EDSR source), served from a local archive in the published layout. The SelfExSR source is
    no archive any more (file by file from a fixed commit): tests/test_download_selfexsr.py."""
    folder, url = served
    edsr = _tar(folder / "benchmark.tar", {"benchmark/Set5/HR/baby.png": b"hr", "benchmark/Set5/LR_bicubic/X2/babyx2.png": b"lr"})
    monkeypatch.setattr(dl, "BENCHMARK_SOURCES", {"edsr": Archive(url(edsr.name), "benchmark.tar", "")})
    root = tmp_path / "data"
    with pytest.warns(UserWarning, match="no published checksum"):
        assert dl.main(["benchmark", "--root", str(root), "--no-progress"]) == 0
    assert _files(root) == ["benchmark/Set5/HR/baby.png", "benchmark/Set5/LR_bicubic/X2/babyx2.png"]
    assert not (root / "archives").exists()  # the archives/ folder it made is gone with the archive
    assert "selfexsr" not in dl.BENCHMARK_SOURCES  # the unpinned master.zip (moved with shutil.rmtree) is gone


def test_fetch_failure_leaves_no_empty_folder(tmp_path, served):
    """A failed archive download removes the data/ and data/archives/ folders it made, and only those."""
    folder, url = served
    (folder / "benchmark.tar").write_bytes(b"not the archive")
    bad = Archive(url("benchmark.tar"), "benchmark.tar", "", sha256="0" * 64)
    root = tmp_path / "data"
    with pytest.raises(ChecksumError):
        fetch(bad, root, progress=False)
    assert not root.exists()
    (root / "archives").mkdir(parents=True)  # the user's (empty) folders stay
    with pytest.raises(ChecksumError):
        fetch(bad, root, progress=False)
    assert (root / "archives").is_dir() and _files(root) == []
    (folder / "evil.tar").write_bytes(_tar(tmp_path / "evil.tar", {"../evil.txt": b"x"}).read_bytes())
    with pytest.warns(UserWarning):  # downloaded, then refused at extraction: the archive goes too
        with pytest.raises(UnsafeArchiveError):
            fetch(Archive(url("evil.tar"), "evil.tar", "sub"), tmp_path / "fresh", progress=False)
    assert not (tmp_path / "fresh").exists()


# ----------------------------------------------------------------------------- offline
def _unreachable(monkeypatch, tmp_path):
    """Point the benchmark source at a local port nobody listens on (fails at once, no real network)."""
    import socket

    with socket.socket() as s:  # a free port, closed again: connecting to it is refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/benchmark.tar"
    monkeypatch.setattr(dl, "BENCHMARK_SOURCES", {"edsr": Archive(url, "benchmark.tar", "")})
    return url


def _assert_one_sentence(err: str, url: str):
    lines = [line for line in err.splitlines() if not line.startswith("downloading ")]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"error: cannot download {url} (") and lines[0].endswith(").")
    assert "Traceback" not in err and "check the network connection" in lines[0]


def test_cli_benchmark_without_network_says_one_sentence(tmp_path, monkeypatch, capsys):
    url = _unreachable(monkeypatch, tmp_path)
    root = tmp_path / "data"
    assert dl.main(["benchmark", "--root", str(root)]) == 1
    _assert_one_sentence(capsys.readouterr().err, url)
    assert not root.exists()  # no partial download left behind, not even the empty data/ and data/archives/


def test_cli_benchmark_dns_failure_says_one_sentence(tmp_path, monkeypatch, capsys):
    """No network at all: name resolution fails inside the HTTP request pooch makes (simulated)."""
    import socket

    import requests

    def offline(*args, **kwargs):
        raise requests.exceptions.ConnectionError(socket.gaierror(-3, "Temporary failure in name resolution"))

    monkeypatch.setattr(requests, "get", offline)
    monkeypatch.setattr(requests.Session, "get", offline)
    url = dl.BENCHMARK_SOURCES["edsr"].url
    assert dl.main(["benchmark", "--root", str(tmp_path / "data")]) == 1
    _assert_one_sentence(capsys.readouterr().err, url)
    assert list(tmp_path.iterdir()) == []


def test_cli_other_errors_still_raise(tmp_path, monkeypatch, served):
    """Only network failures become the one-line message; a bad checksum keeps its own error."""
    folder, url = served
    (folder / "benchmark.tar").write_bytes(b"not the archive")
    monkeypatch.setattr(dl, "BENCHMARK_SOURCES",
                        {"edsr": Archive(url("benchmark.tar"), "benchmark.tar", "", sha256="0" * 64)})
    with pytest.raises(ChecksumError):
        dl.main(["benchmark", "--root", str(tmp_path / "data")])


# ----------------------------------------------------------------------------- the data behind the notebooks
DATA_MANIFEST = Path(__file__).parent / "data" / "data_sha256.json"


def test_data_manifest_is_well_formed():
    files = json.loads(DATA_MANIFEST.read_text())["files"]
    assert len(files) == 404
    assert all(re.fullmatch(r"[0-9a-f]{64}", h) for h in files.values())
    sets = {"/".join(k.split("/")[:3]) for k in files if k.startswith("benchmark/")}
    assert sets == {"benchmark/Set5/image_SRF_2", "benchmark/Set5/image_SRF_3", "benchmark/Set5/image_SRF_4",
                    "benchmark/Set14/image_SRF_2", "benchmark/Set14/image_SRF_3", "benchmark/Set14/image_SRF_4",
                    "benchmark/B100/image_SRF_2", "benchmark/Urban100/image_SRF_4"}
    assert sum(k.startswith("train/SunHays80/") for k in files) == 30


def test_data_root_matches_manifest(data_root):
    """The images under SRLIB_DATA are byte for byte those the notebooks' stored outputs were made with
    (SelfExSR paired layout + train/SunHays80); a file that is present but differs fails, naming it."""
    files = json.loads(DATA_MANIFEST.read_text())["files"]
    present = {k: v for k, v in files.items() if (data_root / k).is_file()}
    if not present:
        pytest.skip(f"no image of the manifest under {data_root} (another layout, e.g. the EDSR archive)")
    wrong = [k for k, v in present.items() if dl.file_digest(data_root / k) != v]
    assert wrong == []
