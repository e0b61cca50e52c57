"""SelfExSR download, file by file from a fixed commit, offline: the shipped checksum list against the images the
notebooks use, and :func:`srlib.data.selfexsr.fetch_selfexsr` / the CLI against a local HTTP server on 127.0.0.1
that serves a folder laid out like ``raw.githubusercontent.com/jbhuang0604/SelfExSR/<commit>/`` with a small
checksum list of our own (hashes verified, a corrupted file refused, nothing partial left, a user's file never
deleted or overwritten, no empty folder left by a failed download)."""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import os
import re
import socket
import threading
from pathlib import Path

import pytest

from srlib.data import download as dl
from srlib.data import selfexsr as sx
from srlib.data.download import ChecksumError, DownloadConflictError
from srlib.data.selfexsr import SELFEXSR_COMMIT, fetch_selfexsr, read_manifest, selfexsr_files, selfexsr_target

DATA_MANIFEST = Path(__file__).parent / "data" / "data_sha256.json"


def _tree(folder: Path) -> list[str]:
    """Every file and folder under ``folder`` (relative, sorted); ``[]`` when it does not exist."""
    return sorted(str(p.relative_to(folder)) + ("/" if p.is_dir() else "") for p in folder.rglob("*"))


# ----------------------------------------------------------------------------- the shipped checksum list
def test_shipped_manifest_lists_every_file_of_the_commit():
    files = read_manifest()
    assert sx.SELFEXSR_MANIFEST.name == "selfexsr-8f6dd8c.sha256" and SELFEXSR_COMMIT.startswith("8f6dd8c")
    assert len(files) == 1274
    assert all(p.startswith("data/") and re.fullmatch(r"[0-9a-f]{64}", h) for p, h in files.items())
    assert sx.SELFEXSR_BASE_URL == f"https://raw.githubusercontent.com/jbhuang0604/SelfExSR/{SELFEXSR_COMMIT}/"
    assert [len(selfexsr_files(s)) for s in sx.SELFEXSR_SUBSETS] == [404, 1114, 1274]


def test_notebook_images_are_byte_identical_to_files_of_the_commit():
    """Every image the notebooks' stored outputs used is in the list, and the course subset puts exactly those
    404 files, with exactly those hashes, where srlib's datasets read them."""
    used = json.loads(DATA_MANIFEST.read_text())["files"]
    listed = set(read_manifest().values())
    assert [k for k, h in used.items() if h not in listed] == []
    course = {f.target: f.sha256 for f in selfexsr_files("course")}
    assert course == used
    sunhays = sorted(k for k in course if k.startswith("train/"))
    assert sunhays == [f"train/SunHays80/img_{n:03d}.png" for n in range(1, 31)]
    full = [f.target for f in selfexsr_files("full")]
    # the full subset leaves the notebooks' training folder as it is (the tiny trainings read all of it)
    assert sorted(t for t in full if t.startswith("train/")) == sunhays
    assert sum(re.fullmatch(r"extra/SunHays80/img_0(3[1-9]|[4-7]\d|80)\.png", t) is not None for t in full) == 50
    assert sum(t.startswith("extra/SunHays80/LR_x8/") for t in full) == 80
    assert len(set(full)) == 1274  # no two files go to the same place
    assert {t.split("/")[1] for t in full if t.startswith("benchmark/")} == {"Set5", "Set14", "B100", "Urban100"}


def test_selfexsr_target():
    assert selfexsr_target("data/BSD100/image_SRF_3/img_007_SRF_3_LR.png") == \
        "benchmark/B100/image_SRF_3/img_007_SRF_3_LR.png"
    assert selfexsr_target("data/Set5/image_SRF_2/img_001_SRF_2_HR.png") == \
        "benchmark/Set5/image_SRF_2/img_001_SRF_2_HR.png"
    assert selfexsr_target("data/Sun-Hays80/image_SRF_8/img_030_SRF_8_HR.png") == "train/SunHays80/img_030.png"
    assert selfexsr_target("data/Sun-Hays80/image_SRF_8/img_031_SRF_8_HR.png") == "extra/SunHays80/img_031.png"
    assert selfexsr_target("data/Sun-Hays80/image_SRF_8/img_001_SRF_8_LR.png") == \
        "extra/SunHays80/LR_x8/img_001_SRF_8_LR.png"
    for bad in ("data/Manga109/image_SRF_2/a.png", "README.md", "data/Set5/img.png"):
        with pytest.raises(ValueError, match=re.escape(repr(bad))):
            selfexsr_target(bad)


@pytest.mark.parametrize("line,match", [
    ("data/Set5/a.png", "expected '<path> <sha256>'"),
    ("data/Set5/a.png " + "g" * 64, "expected '<path> <sha256>'"),
    ("data/../../etc/passwd " + "0" * 64, "must be relative"),
    ("/etc/passwd " + "0" * 64, "must be relative"),
    ("data/Set5/image_SRF_2/img_001_SRF_2_HR.png " + "0" * 64, "listed twice"),
])
def test_read_manifest_refuses_bad_lines(tmp_path, line, match):
    m = tmp_path / "list.sha256"
    m.write_text(f"# comment\n\ndata/Set5/image_SRF_2/img_001_SRF_2_HR.png {'0' * 64}\n{line}\n")
    with pytest.raises(ValueError, match=rf"list\.sha256, line 4: .*{re.escape(match)}"):
        read_manifest(m)
    with pytest.raises(FileNotFoundError, match="checksum list not found"):
        read_manifest(tmp_path / "none.sha256")
    with pytest.raises(ValueError, match="unknown SelfExSR subset 'all'"):
        selfexsr_files("all")


# ----------------------------------------------------------------------------- a local "repository"
class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


#: A small stand-in for the repository's data/: course and non-course files of every kind of folder.
FAKE_FILES = [
    "data/Set5/image_SRF_2/img_001_SRF_2_HR.png", "data/Set5/image_SRF_2/img_001_SRF_2_LR.png",
    "data/Set5/image_SRF_4/img_002_SRF_4_HR.png", "data/Set5/image_SRF_4/img_002_SRF_4_LR.png",
    "data/BSD100/image_SRF_2/img_001_SRF_2_HR.png", "data/BSD100/image_SRF_2/img_001_SRF_2_LR.png",
    "data/BSD100/image_SRF_3/img_001_SRF_3_HR.png",  # not in the course subset (B100 x3)
    "data/Urban100/image_SRF_4/img_030_SRF_4_HR.png", "data/Urban100/image_SRF_4/img_031_SRF_4_HR.png",
    "data/Urban100/image_SRF_2/img_001_SRF_2_HR.png",
    "data/Sun-Hays80/image_SRF_8/img_001_SRF_8_HR.png", "data/Sun-Hays80/image_SRF_8/img_001_SRF_8_LR.png",
    "data/Sun-Hays80/image_SRF_8/img_031_SRF_8_HR.png",
]
COURSE = sorted([
    "benchmark/Set5/image_SRF_2/img_001_SRF_2_HR.png", "benchmark/Set5/image_SRF_2/img_001_SRF_2_LR.png",
    "benchmark/Set5/image_SRF_4/img_002_SRF_4_HR.png", "benchmark/Set5/image_SRF_4/img_002_SRF_4_LR.png",
    "benchmark/B100/image_SRF_2/img_001_SRF_2_HR.png", "benchmark/B100/image_SRF_2/img_001_SRF_2_LR.png",
    "benchmark/Urban100/image_SRF_4/img_030_SRF_4_HR.png", "train/SunHays80/img_001.png",
])


class Repo:
    """A local HTTP server serving ``<folder>/<commit>/data/...``, with the checksum list of what it serves."""

    def __init__(self, tmp_path: Path):
        self.folder = tmp_path / "served"
        self.files = {p: hashlib.sha256(p.encode()).digest() * 300 + os.urandom(97) for p in FAKE_FILES}
        for path, data in self.files.items():
            (self.folder / SELFEXSR_COMMIT / path).parent.mkdir(parents=True, exist_ok=True)
            (self.folder / SELFEXSR_COMMIT / path).write_bytes(data)
        self.manifest = tmp_path / "fake.sha256"
        self.manifest.write_text("# a small checksum list of the served files\n" + "".join(
            f"{p} {hashlib.sha256(d).hexdigest()}\n" for p, d in self.files.items()))
        handler = functools.partial(_Quiet, directory=str(self.folder))
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/{SELFEXSR_COMMIT}/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def served(self, path: str) -> Path:
        return self.folder / SELFEXSR_COMMIT / path

    def corrupt(self, path: str) -> None:
        data = bytearray(self.served(path).read_bytes())
        data[len(data) // 2] ^= 0xFF
        self.served(path).write_bytes(bytes(data))

    def fetch(self, root, subset="course", **kw):
        kw.setdefault("progress", False)
        return fetch_selfexsr(root, subset, base_url=self.base_url, manifest=self.manifest, **kw)

    def cli(self, *args: str) -> int:
        return dl.main([*args, "--base-url", self.base_url, "--manifest", str(self.manifest), "--no-progress"])


@pytest.fixture
def repo(tmp_path):
    r = Repo(tmp_path)
    try:
        yield r
    finally:
        r.server.shutdown()
        r.server.server_close()


def _expected(repo: Repo, target: str) -> bytes:
    (path,) = [p for p in repo.files if selfexsr_target(p) == target]
    return repo.files[path]


# ----------------------------------------------------------------------------- fetch_selfexsr
@pytest.mark.parametrize("jobs", [1, 4])
def test_fetch_course_subset_verified_in_the_layout_srlib_reads(tmp_path, repo, jobs):
    root = tmp_path / "data"
    summary = repo.fetch(root, jobs=jobs)
    files = [t for t in _tree(root) if not t.endswith("/")]
    assert files == COURSE  # no temporary file left, nothing outside the subset
    assert [str(p.relative_to(root)) for p in summary.downloaded] == COURSE and summary.present == []
    for target in COURSE:
        assert (root / target).read_bytes() == _expected(repo, target)
    from srlib.data.datasets import available_benchmarks, benchmark_scales, list_images  # srlib finds them

    assert available_benchmarks(root / "benchmark") == ["Set5", "B100", "Urban100"]
    assert benchmark_scales("Set5", root / "benchmark") == [2, 4]
    assert list_images(root / "train" / "SunHays80") == [root / "train" / "SunHays80" / "img_001.png"]

    # a second run downloads nothing: the served files changed, yet the verified local ones are kept
    for path in repo.files:
        repo.corrupt(path)
    again = repo.fetch(root, jobs=jobs)
    assert again.downloaded == [] and sorted(str(p.relative_to(root)) for p in again.present) == COURSE


def test_fetch_full_subset(tmp_path, repo):
    root = tmp_path / "data"
    repo.fetch(root, "full")
    files = [t for t in _tree(root) if not t.endswith("/")]
    assert len(files) == len(FAKE_FILES)
    assert "extra/SunHays80/img_031.png" in files and "extra/SunHays80/LR_x8/img_001_SRF_8_LR.png" in files
    assert [t for t in files if t.startswith("train/")] == ["train/SunHays80/img_001.png"]
    assert "benchmark/B100/image_SRF_3/img_001_SRF_3_HR.png" in files
    assert [t for t in _tree(root) if t.startswith("benchmark/") and t.endswith("/") and t.count("/") == 2] == \
        ["benchmark/B100/", "benchmark/Set5/", "benchmark/Urban100/"]


@pytest.mark.parametrize("jobs", [1, 4])
def test_a_corrupted_file_is_refused_and_nothing_is_left(tmp_path, repo, jobs):
    repo.corrupt("data/Urban100/image_SRF_4/img_030_SRF_4_HR.png")
    root = tmp_path / "data"
    with pytest.raises(ChecksumError, match=r"img_030_SRF_4_HR\.png: sha256 mismatch"):
        repo.fetch(root, jobs=jobs)
    assert not root.exists()  # no file, no empty folder, no temporary file


def test_a_failed_download_removes_only_what_it_made(tmp_path, repo):
    """Into a data root the user already has: after a failure, exactly the user's files and folders remain."""
    root = tmp_path / "data"
    (root / "benchmark" / "Set5" / "mine").mkdir(parents=True)
    (root / "benchmark" / "Set5" / "mine" / "photo.png").write_bytes(b"user")
    (root / "train" / "empty_but_mine").mkdir(parents=True)
    before = _tree(root)
    repo.served("data/Sun-Hays80/image_SRF_8/img_001_SRF_8_HR.png").unlink()  # HTTP 404
    with pytest.raises(OSError, match=r"img_001_SRF_8_HR\.png: the server answered HTTP 404"):
        repo.fetch(root, jobs=2)
    assert _tree(root) == before
    assert (root / "benchmark" / "Set5" / "mine" / "photo.png").read_bytes() == b"user"


def test_keep_on_error_keeps_the_verified_files(tmp_path, repo):
    bad = "data/Set5/image_SRF_4/img_002_SRF_4_LR.png"
    good = repo.served(bad).read_bytes()
    repo.corrupt(bad)
    root = tmp_path / "data"
    with pytest.raises(ChecksumError):
        repo.fetch(root, jobs=1, keep_on_error=True)
    kept = [t for t in _tree(root) if not t.endswith("/")]
    assert selfexsr_target(bad) not in kept and len(kept) >= 3  # the three listed before it, verified
    for target in kept:
        assert (root / target).read_bytes() == _expected(repo, target)
    repo.served(bad).write_bytes(good)  # the server is right again: a second run fetches only the rest
    summary = repo.fetch(root, jobs=1)
    assert sorted(str(p.relative_to(root)) for p in summary.present) == kept
    assert sorted(str(p.relative_to(root)) for p in summary.downloaded) == sorted(set(COURSE) - set(kept))


def test_a_users_different_file_is_never_overwritten(tmp_path, repo):
    root = tmp_path / "data"
    mine = root / "benchmark" / "Set5" / "image_SRF_2" / "img_001_SRF_2_HR.png"
    mine.parent.mkdir(parents=True)
    mine.write_bytes(b"my own picture")
    (root / "train" / "SunHays80" / "img_001.png").mkdir(parents=True)  # a folder where a file goes
    before = _tree(root)
    with pytest.raises(DownloadConflictError, match=r"2 file\(s\) already exist .*img_001_SRF_2_HR\.png.*img_001\.png"
                       r".*never overwrites") as err:
        repo.fetch(root)
    assert err.value.conflicts == [mine, root / "train" / "SunHays80" / "img_001.png"]
    assert _tree(root) == before and mine.read_bytes() == b"my own picture"  # nothing downloaded, nothing removed


def test_benchmark_source_selfexsr_keeps_the_users_files(tmp_path, repo, capsys):
    """``benchmark --source selfexsr`` over a benchmark/ with the user's own files (issue 22, data loss 2):
    nothing is removed; a file already in place with the right content is kept as it is."""
    root = tmp_path / "data"
    own = root / "benchmark" / "Set5" / "HR" / "baby.png"
    own.parent.mkdir(parents=True)
    own.write_bytes(b"user's EDSR-layout file")
    same = root / "benchmark" / "Set5" / "image_SRF_2" / "img_001_SRF_2_LR.png"
    same.parent.mkdir(parents=True)
    same.write_bytes(_expected(repo, "benchmark/Set5/image_SRF_2/img_001_SRF_2_LR.png"))
    mtime = same.stat().st_mtime_ns
    assert repo.cli("benchmark", "--source", "selfexsr", "--root", str(root)) == 0
    assert own.read_bytes() == b"user's EDSR-layout file" and same.stat().st_mtime_ns == mtime
    files = [t for t in _tree(root) if not t.endswith("/")]
    assert files == sorted(["benchmark/Set5/HR/baby.png"] + [
        selfexsr_target(p) for p in FAKE_FILES if "Sun-Hays80" not in p])
    assert "1 already present and verified" in capsys.readouterr().err


def test_without_network_nothing_is_left(tmp_path):
    with socket.socket() as s:  # a free port, closed again: connecting to it is refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    root = tmp_path / "data"
    with pytest.raises(ConnectionError, match="no network connection"):
        fetch_selfexsr(root, "course", base_url=f"http://127.0.0.1:{port}/", progress=False, timeout=5)
    assert not root.exists()


def test_jobs_must_be_a_positive_integer(tmp_path):
    for bad in (0, 2.5, True):
        with pytest.raises(ValueError, match="jobs must be an integer >= 1"):
            fetch_selfexsr(tmp_path / "d", jobs=bad)
    assert not (tmp_path / "d").exists()


# ----------------------------------------------------------------------------- CLI
def test_cli_default_is_the_course_subset(tmp_path, repo, capsys):
    root = tmp_path / "data"
    assert repo.cli("--root", str(root)) == 0
    assert [t for t in _tree(root) if not t.endswith("/")] == COURSE
    assert f"done: {root} (8 downloaded, 0 already present and verified)" in capsys.readouterr().err
    assert dl.main(["--root", str(root), "--dry-run"]) == 0  # the real list: 404 files, nothing fetched
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 405 and out[-1] == f"404 files (SelfExSR course, commit 8f6dd8c) into {root}"
    assert out[0].startswith(sx.SELFEXSR_BASE_URL + "data/")


def test_cli_errors_are_one_line_and_leave_nothing(tmp_path, repo, capsys):
    root = tmp_path / "data"
    repo.corrupt("data/BSD100/image_SRF_2/img_001_SRF_2_LR.png")
    assert repo.cli("--root", str(root)) == 1
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error")]
    assert len(err) == 1 and "img_001_SRF_2_LR.png: sha256 mismatch" in err[0]
    assert "nothing of this run was kept" in err[0] and not root.exists()

    mine = root / "train" / "SunHays80" / "img_001.png"
    mine.parent.mkdir(parents=True)
    mine.write_bytes(b"mine")
    assert repo.cli("selfexsr", "--subset", "full", "--root", str(root)) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and "never overwrites your files" in err and "nothing was downloaded" in err
    assert _tree(root) == ["train/", "train/SunHays80/", "train/SunHays80/img_001.png"]

    with pytest.raises(SystemExit) as exit_:
        dl.main(["--root", str(root), "--jobs", "0"])
    assert exit_.value.code == 2


def test_ctrl_c_leaves_nothing(tmp_path, repo, monkeypatch):
    """An interrupt in the middle (here: the third file) removes the files and folders of the run."""
    real, calls = dl.download_file, []

    def interrupted(url, dest, **kw):
        calls.append(url)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(url, dest, **kw)

    monkeypatch.setattr(sx, "download_file", interrupted)
    root = tmp_path / "data"
    (root / "benchmark").mkdir(parents=True)
    with pytest.raises(KeyboardInterrupt):
        repo.fetch(root, jobs=1)
    assert len(calls) >= 3 and _tree(root) == ["benchmark/"]  # a download already queued may still run


@pytest.mark.data
@pytest.mark.slow
def test_real_list_against_the_data_root(tmp_path, data_root):
    """End to end with the shipped list: serve the data root's 404 images at their paths in the repository and
    download the course subset: every file verified, byte for byte the data root's, in the same layout."""
    used = json.loads(DATA_MANIFEST.read_text())["files"]
    if not all((data_root / k).is_file() for k in used):
        pytest.skip(f"the course subset is not complete under {data_root}")
    served = tmp_path / "served"
    for f in selfexsr_files("course"):
        (served / f.path).parent.mkdir(parents=True, exist_ok=True)
        (served / f.path).symlink_to(data_root / f.target)
    handler = functools.partial(_Quiet, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        root = tmp_path / "data"
        summary = fetch_selfexsr(root, "course", base_url=f"http://127.0.0.1:{server.server_address[1]}/",
                                 progress=False)
    finally:
        server.shutdown()
        server.server_close()
    assert len(summary.downloaded) == 404
    assert sorted(t for t in _tree(root) if not t.endswith("/")) == sorted(used)
    assert all((root / k).read_bytes() == (data_root / k).read_bytes() for k in used)
