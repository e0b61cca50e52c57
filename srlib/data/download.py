"""Download the SR data: the SelfExSR images file by file, DIV2K and the EDSR benchmark archive.

Usage::

    python -m srlib.data.download                              # SelfExSR "course" subset: what the notebooks use
    python -m srlib.data.download selfexsr --subset full       # all 1274 SelfExSR files
    python -m srlib.data.download benchmark --source selfexsr  # the four SelfExSR benchmark sets, every scale
    python -m srlib.data.download benchmark --root data        # EDSR's benchmark.tar
    python -m srlib.data.download div2k --root data            # HR + bicubic LR x2/x3/x4, train + valid
    python -m srlib.data.download div2k --scales 2 --splits valid

Result (what :mod:`srlib.data.datasets` reads)::

    <root>/benchmark/Set5/image_SRF_2/img_001_SRF_2_HR.png ...   (selfexsr; BSD100 is named B100)
    <root>/train/SunHays80/img_001.png ... img_030.png           (selfexsr: Sun-Hays 80 photographs, for training)
    <root>/benchmark/Set5/HR/baby.png ...         <root>/benchmark/Set5/LR_bicubic/X2/babyx2.png ...  (edsr)
    <root>/DIV2K/DIV2K_train_HR/0001.png ...      <root>/DIV2K/DIV2K_train_LR_bicubic/X2/0001x2.png ...

**SelfExSR, file by file.** The images of Huang, Singh and Ahuja's repository are fetched one by one from the
fixed commit :data:`SELFEXSR_COMMIT` (``raw.githubusercontent.com`` addresses), each checked against its
SHA-256 in the list shipped with srlib (``srlib/data/selfexsr-8f6dd8c.sha256``, 1274 files), so a download gives
exactly the data the notebooks' stored outputs were made with. See :func:`fetch_selfexsr`.

Downloads go through `pooch <https://www.fatiando.org/pooch/>`_ (``pooch.retrieve``: HTTP(S) with a tqdm
progress bar, hash check, atomic move); the unpacking is this module's own :func:`safe_extract`, because
pooch's ``Unzip`` / ``Untar`` processors do not refuse members that escape the target folder.

Safety:

* downloads go to a temporary file next to the destination and are moved into place
  only when complete and verified (pooch); on any failure (network, interrupt, bad checksum) the
  partial file is deleted; no network raises one clear :class:`ConnectionError`;
* a failed command leaves nothing behind: the files it downloaded and the folders it created are removed;
  the user's own files and folders are never deleted or overwritten. A SelfExSR file already in place with the
  right hash is kept (not downloaded again); one with another content is left alone and the download stops
  before fetching anything (:class:`DownloadConflictError`, naming the files);
* checksums (SHA-256 and/or MD5) are verified *before* extraction. Where no published
  checksum is known to us (DIV2K, the EDSR archive) it is ``None``; the computed digests are then printed with a
  warning so that you can record them (we never guess a checksum);
* extraction validates every member first: absolute paths, ``..`` components, links and
  device files are refused (:class:`UnsafeArchiveError`), so nothing is written outside
  the target folder. Files are unpacked to a temporary folder inside the target and moved
  into place one complete file at a time; a zip member whose CRC does not match fails the whole
  extraction before anything is moved.

Sources: SelfExSR data (Huang, Singh and Ahuja, *Single Image Super-Resolution from Transformed
Self-Exemplars*, CVPR 2015), https://github.com/jbhuang0604/SelfExSR at commit 8f6dd8c; the Sun-Hays 80
photographs it ships (Sun and Hays, ICCP 2012); DIV2K (Agustsson & Timofte, CVPRW 2017),
https://data.vision.ee.ethz.ch/cvl/DIV2K/; EDSR benchmark archive (Lim et al. 2017, EDSR-PyTorch README),
https://cv.snu.ac.kr/research/EDSR/benchmark.tar.
"""

from __future__ import annotations

import argparse
import filecmp
import os
import threading
import re
import shutil
import stat
import sys
import tarfile
import tempfile
import warnings
import zipfile
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Iterable, Sequence

from srlib.config import data_dir

__all__ = [
    "Archive",
    "ChecksumError",
    "DownloadConflictError",
    "UnsafeArchiveError",
    "DIV2K_BASE_URL",
    "BENCHMARK_SOURCES",
    "SELFEXSR_COMMIT",
    "SELFEXSR_BASE_URL",
    "SELFEXSR_MANIFEST",
    "SELFEXSR_SUBSETS",
    "RemoteFile",
    "FetchSummary",
    "read_manifest",
    "selfexsr_target",
    "selfexsr_files",
    "fetch_selfexsr",
    "div2k_archives",
    "file_digest",
    "verify_checksum",
    "download_file",
    "safe_extract",
    "fetch",
    "main",
]

DIV2K_BASE_URL = "https://data.vision.ee.ethz.ch/cvl/DIV2K/"
_CHUNK = 1 << 20


class ChecksumError(ValueError):
    """A file's digest differs from the expected one (message names file, expected and actual)."""


class DownloadConflictError(FileExistsError):
    """Files where a download would write already exist with another content; nothing was downloaded.

    Attributes:
        conflicts: the existing paths (files with another SHA-256, or folders/links where a file goes).
    """

    def __init__(self, conflicts: Sequence[Path], *, limit: int = 10):
        self.conflicts = [Path(p) for p in conflicts]
        shown = ", ".join(str(p) for p in self.conflicts[:limit])
        more = f" and {len(self.conflicts) - limit} more" if len(self.conflicts) > limit else ""
        super().__init__(
            f"{len(self.conflicts)} file(s) already exist with another content than the download would give: "
            f"{shown}{more}; srlib never overwrites your files: move them away (or use another --root) and run "
            "the download again"
        )


class UnsafeArchiveError(ValueError):
    """An archive member would be written outside the target folder, or is a link/device."""


@dataclass(frozen=True)
class Archive:
    """One downloadable archive.

    Attributes:
        url: public address.
        filename: local file name of the archive.
        subdir: folder under ``root`` to extract into (``"DIV2K"``, ``""`` for ``root`` itself).
        sha256, md5: published digests, or ``None`` when not known for certain.
        description: one line for ``--help`` / logs.
    """

    url: str
    filename: str
    subdir: str = ""
    sha256: str | None = None
    md5: str | None = None
    description: str = ""


def div2k_archives(
    splits: Iterable[str] = ("train", "valid"),
    scales: Iterable[int] = (2, 3, 4),
    *,
    hr: bool = True,
    base_url: str = DIV2K_BASE_URL,
) -> list[Archive]:
    """DIV2K zip files: ``DIV2K_<split>_HR.zip`` and ``DIV2K_<split>_LR_bicubic_X<s>.zip``.

    Checksums are ``None``: the DIV2K site publishes none and we do not invent them.

    Raises:
        ValueError: unknown split or scale.
    """
    base = base_url if base_url.endswith("/") else base_url + "/"
    out = []
    for split in splits:
        if split not in ("train", "valid"):
            raise ValueError(f"DIV2K split must be 'train' or 'valid', got {split!r}")
        if hr:
            name = f"DIV2K_{split}_HR.zip"
            out.append(Archive(base + name, name, "DIV2K", description=f"DIV2K {split} HR images"))
        for s in scales:
            if s not in (2, 3, 4):
                raise ValueError(f"unsupported scale {s!r}; DIV2K bicubic LR exists for 2, 3, 4")
            name = f"DIV2K_{split}_LR_bicubic_X{s}.zip"
            out.append(Archive(base + name, name, "DIV2K", description=f"DIV2K {split} bicubic LR x{s}"))
    return out


#: Benchmark archives: "edsr" extracts to ``<root>/benchmark/<Set>/{HR,LR_bicubic/X<s>}`` (no published
#: checksum: None). The SelfExSR sets are not an archive: ``benchmark --source selfexsr`` fetches them file by
#: file from a fixed commit with per-file SHA-256 (:func:`fetch_selfexsr`, subset ``"benchmark"``).
BENCHMARK_SOURCES = {
    "edsr": Archive(
        "https://cv.snu.ac.kr/research/EDSR/benchmark.tar", "benchmark.tar", "",
        description="Set5, Set14, B100, Urban100 (EDSR-PyTorch benchmark.tar)",
    ),
}

# ----------------------------------------------------------------------------- checksums
def file_digest(path: str | os.PathLike, algorithm: str = "sha256") -> str:
    """Hex digest of a file (``pooch.file_hash``). ``algorithm``: any ``hashlib`` name (``"sha256"``, ``"md5"``)."""
    import pooch

    return pooch.file_hash(str(path), alg=algorithm)


def verify_checksum(path: str | os.PathLike, *, sha256: str | None = None, md5: str | None = None) -> dict:
    """Check a file against the given digests; return the computed ``{"sha256": ..., "md5": ...}``.

    Both digests are always computed (so they can be reported); only the given ones are checked.

    Raises:
        FileNotFoundError: missing file.
        ChecksumError: a digest differs (message names the file, the expected and the actual digest).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"file to verify not found: {path}")
    got = {"sha256": file_digest(path, "sha256"), "md5": file_digest(path, "md5")}
    for algo, expected in (("sha256", sha256), ("md5", md5)):
        if expected is not None and got[algo] != expected.lower():
            raise ChecksumError(f"{path}: {algo} mismatch, expected {expected.lower()}, got {got[algo]}")
    return got


# ----------------------------------------------------------------------------- download
def download_file(
    url: str,
    dest: str | os.PathLike,
    *,
    sha256: str | None = None,
    md5: str | None = None,
    progress: bool = True,
    timeout: float = 60.0,
) -> Path:
    """Download ``url`` to ``dest`` with ``pooch.retrieve`` (hash-checked, atomic) and verify it.

    pooch streams the data to a temporary file in ``dest``'s folder, checks the known hash (SHA-256 if given,
    else MD5) and only then moves it to ``dest``; on any failure the temporary file is removed and ``dest`` is
    left as it was. An existing ``dest`` that already has the known hash is kept without downloading (and
    one that has not is downloaded again); with no known hash an existing ``dest`` is kept as it is. After a
    download without a known checksum, a warning prints the computed SHA-256 and MD5.

    Args:
        url: ``http(s)://`` address (pooch also accepts ``ftp://``, ``sftp://`` and ``doi:``).
        dest: final file path (parent folders are created).
        sha256, md5: expected digests or ``None`` (with both, MD5 is checked after the SHA-256 retrieval).
        progress: show pooch's tqdm progress bar.
        timeout: seconds to wait for the server (HTTP).

    Returns:
        ``dest``.

    Raises:
        ChecksumError: digest mismatch (nothing new is kept).
        ConnectionError: no network, or the server cannot be reached (one sentence naming the URL).
        OSError: the server refused the file (HTTP error status), or a disk error.
        ValueError: a URL scheme pooch cannot download (e.g. ``file://``).
    """
    import pooch
    import requests

    dest = Path(dest)
    # HTTP(S) with our timeout; any other scheme: pooch picks its downloader (or refuses the scheme)
    downloader = None
    if url.startswith(("http://", "https://")):
        downloader = pooch.HTTPDownloader(progressbar=progress, timeout=timeout)
    known = f"sha256:{sha256.lower()}" if sha256 else (f"md5:{md5.lower()}" if md5 else None)
    existed = dest.is_file()
    import logging

    logger = pooch.get_logger()
    logger.setLevel(logging.WARNING)  # our own "downloading ..." line says it; pooch's INFO would repeat it
    for handler in logger.handlers:  # pooch's handler keeps the stderr of its import time: use today's
        if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
            handler.stream = sys.stderr
    try:
        pooch.retrieve(url, known_hash=known, fname=dest.name, path=dest.parent, downloader=downloader,
                       progressbar=progress)
    except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as err:
        raise ConnectionError(f"cannot download {url}: there is no network connection or the server cannot be "
                              f"reached ({type(err).__name__}); download it elsewhere and put it at {dest}") from None
    except requests.exceptions.HTTPError as err:
        status = err.response.status_code if err.response is not None else "an error"
        raise OSError(f"cannot download {url}: the server answered HTTP {status}") from None
    except ValueError as err:
        if "protocol" in str(err).lower():
            raise ValueError(f"cannot download {url!r}: pooch reads http(s)://, ftp://, sftp:// and doi: "
                             "addresses") from None
        if "hash" not in str(err).lower():
            raise
        algo = "sha256" if sha256 else "md5"
        raise ChecksumError(f"{dest}: {algo} mismatch, expected {known.split(':', 1)[1]} "
                            f"(pooch: {err})") from None
    if sha256 and md5:
        try:
            verify_checksum(dest, md5=md5)
        except ChecksumError:
            dest.unlink()
            raise
    if known is None and not existed:
        got = verify_checksum(dest)
        warnings.warn(
            f"no published checksum known for {url}; downloaded file has "
            f"sha256={got['sha256']} md5={got['md5']} (record these to verify later downloads)",
            stacklevel=2,
        )
    return dest


# ----------------------------------------------------------------------------- extraction
def _member_target(dest: Path, name: str, archive: Path) -> Path | None:
    """Where a member goes, or ``None`` for the archive's root entry; refuse escapes."""
    clean = name.replace("\\", "/")
    if clean.startswith("/") or re.match(r"^[A-Za-z]:", clean):
        raise UnsafeArchiveError(f"{archive}: member {name!r} has an absolute path")
    parts = [p for p in PurePosixPath(clean).parts if p not in ("", ".")]
    if ".." in parts:
        raise UnsafeArchiveError(f"{archive}: member {name!r} points outside the target folder ('..')")
    if not parts:
        return None
    target = dest.joinpath(*parts)
    root = dest.resolve()
    resolved = target.resolve()
    if resolved != root and root not in resolved.parents:
        raise UnsafeArchiveError(f"{archive}: member {name!r} resolves outside {dest}")
    return target


def _plan_zip(zf: zipfile.ZipFile, dest: Path, archive: Path):
    plan = []
    for info in zf.infolist():
        target = _member_target(dest, info.filename, archive)
        mode = info.external_attr >> 16
        if mode and stat.S_ISLNK(mode):
            raise UnsafeArchiveError(f"{archive}: member {info.filename!r} is a symbolic link")
        if target is not None:
            plan.append((info, target, info.is_dir()))
    return plan


def _plan_tar(tf: tarfile.TarFile, dest: Path, archive: Path):
    plan = []
    for member in tf.getmembers():
        target = _member_target(dest, member.name, archive)
        if member.issym() or member.islnk():
            raise UnsafeArchiveError(f"{archive}: member {member.name!r} is a link")
        if not (member.isfile() or member.isdir()):
            raise UnsafeArchiveError(f"{archive}: member {member.name!r} is a device/fifo/special file")
        if target is not None:
            plan.append((member, target, member.isdir()))
    return plan


def safe_extract(archive: str | os.PathLike, dest: str | os.PathLike, *, replace: bool = False) -> list[Path]:
    """Extract a zip or tar(.gz/.bz2/.xz) archive into ``dest`` without ever writing outside it.

    All members are checked before anything is written; regular files and folders only.
    Files are unpacked to a temporary folder next to ``dest`` (in its parent) and moved into
    place only once every member has been read and its CRC checked: a new ``dest`` is the
    renamed temporary folder; into an existing ``dest`` files are moved one by one and existing folders are
    merged. An existing file with the same content is kept as it is; one with another content (or a folder
    where a file goes, a file where a folder goes) stops the extraction before anything is moved
    (:class:`DownloadConflictError`), unless ``replace=True`` (then files with the same name are replaced).
    A rejected or damaged archive leaves nothing behind: no ``dest``, no temporary folder, no parent folder
    created for it.

    Returns:
        The extracted file paths (not folders), sorted.

    Raises:
        FileNotFoundError: missing archive.
        UnsafeArchiveError: absolute path, ``..``, link or special member (named).
        DownloadConflictError: files in ``dest`` differ from the archive's (``replace=False``); nothing moved.
        ValueError: not a zip or tar archive.
        zipfile.BadZipFile, tarfile.TarError, OSError: a damaged member (e.g. bad CRC), as raised by the
            readers; nothing is left behind.
    """
    archive, dest = Path(archive), Path(dest)
    if not archive.is_file():
        raise FileNotFoundError(f"archive not found: {archive}")
    if zipfile.is_zipfile(archive):
        opener, kind = zipfile.ZipFile, "zip"
    elif tarfile.is_tarfile(archive):
        opener, kind = tarfile.open, "tar"
    else:
        raise ValueError(f"{archive}: not a zip or tar archive")
    created = [p for p in (dest.parent, *dest.parent.parents) if not p.exists()]  # parents we would make
    written: list[Path] = []
    staging: Path | None = None
    done = False
    try:
        with opener(archive) as arc:
            plan = _plan_zip(arc, dest, archive) if kind == "zip" else _plan_tar(arc, dest, archive)
            dest.parent.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.extract-", dir=dest.parent))
            for member, target, is_dir in plan:
                staged = staging / target.relative_to(dest)
                if is_dir:
                    staged.mkdir(parents=True, exist_ok=True)
                    continue
                staged.parent.mkdir(parents=True, exist_ok=True)
                src = arc.open(member) if kind == "zip" else arc.extractfile(member)
                with src, open(staged, "wb") as out:
                    shutil.copyfileobj(src, out, _CHUNK)  # zipfile checks the CRC at the end of each member
        if not dest.exists():  # complete: the whole staged tree becomes dest in one rename
            os.replace(staging, dest)
            written = [target for _, target, is_dir in plan if not is_dir]
        else:
            same, conflicts = set(), []
            for member, target, is_dir in plan:  # look before moving anything
                if is_dir:
                    if os.path.lexists(target) and not target.is_dir():
                        conflicts.append(target)
                elif target.is_file() and filecmp.cmp(target, staging / target.relative_to(dest), shallow=False):
                    same.add(target)
                elif os.path.lexists(target) and not (replace and target.is_file()):
                    conflicts.append(target)
            if conflicts:
                raise DownloadConflictError(conflicts)
            for member, target, is_dir in plan:
                if is_dir:
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                if target not in same:
                    target.parent.mkdir(parents=True, exist_ok=True)
                    os.replace(staging / target.relative_to(dest), target)
                written.append(target)
        done = True
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        if not done:
            for p in created:  # innermost first; only folders we made and that are still empty
                try:
                    p.rmdir()
                except OSError:
                    break
    return sorted(set(written))


# ----------------------------------------------------------------------------- archives
def _missing_folders(folder: Path) -> list[Path]:
    """``folder`` and its ancestors that do not exist yet, innermost first."""
    return [p for p in (folder, *folder.parents) if not p.exists()]


def _remove_empty(folders: Iterable[Path]) -> None:
    """Remove the given folders (innermost first) if they are empty; never touch one that holds anything."""
    for p in folders:
        try:
            p.rmdir()
        except OSError:
            pass


def fetch(
    archive: Archive,
    root: str | os.PathLike,
    *,
    keep_archive: bool = False,
    force: bool = False,
    progress: bool = True,
) -> Path:
    """Download (unless present), verify and extract one :class:`Archive` under ``root``.

    The archive is stored in ``<root>/archives/`` and deleted after a successful extraction
    unless ``keep_archive``. An archive already there is reused (verified against known
    checksums) unless ``force``. Extraction never replaces a file of the user's with another content
    (:func:`safe_extract`, ``replace=False``). On any failure the archive downloaded by this call and the folders
    this call created (``root``, ``root/archives``) are removed again; nothing that was there before is touched.

    Raises:
        ChecksumError, ConnectionError, OSError: see :func:`download_file`.
        DownloadConflictError: the archive holds files that exist in the target with another content.
        UnsafeArchiveError: see :func:`safe_extract`.

    Returns:
        The folder it was extracted into (``root / archive.subdir``).
    """
    root = Path(root)
    path = root / "archives" / archive.filename
    created = _missing_folders(path.parent)
    downloaded = False
    try:
        if force and path.exists():
            path.unlink()
        if path.exists():
            verify_checksum(path, sha256=archive.sha256, md5=archive.md5)
        else:
            print(f"downloading {archive.url}", file=sys.stderr)
            download_file(archive.url, path, sha256=archive.sha256, md5=archive.md5, progress=progress)
            downloaded = True
        target = root / archive.subdir if archive.subdir else root
        print(f"extracting {path.name} into {target}", file=sys.stderr)
        safe_extract(path, target)
        if not keep_archive:
            path.unlink()
    except BaseException:
        if downloaded and not keep_archive:
            path.unlink(missing_ok=True)
        _remove_empty(created)
        raise
    if not keep_archive and path.parent in created:
        _remove_empty([path.parent])  # the archives/ folder this call made, now empty
    return target


# ----------------------------------------------------------------------------- SelfExSR, file by file
#: The commit of https://github.com/jbhuang0604/SelfExSR whose ``data/`` folder srlib downloads.
SELFEXSR_COMMIT = "8f6dd8c1d20cb7e8792a7177b4f6fd677633f598"
#: Raw-file address of the repository at that commit; a file's URL is this + its path in the repository.
SELFEXSR_BASE_URL = f"https://raw.githubusercontent.com/jbhuang0604/SelfExSR/{SELFEXSR_COMMIT}/"
#: ``<path in the repository> <sha256>`` for every file under ``data/`` at :data:`SELFEXSR_COMMIT` (1274 lines).
SELFEXSR_MANIFEST = Path(__file__).with_name("selfexsr-8f6dd8c.sha256")
#: ``course``: the 404 files the notebooks and the data tests use (Set5 and Set14 at x2/x3/x4, B100 at x2,
#: Urban100 img_001-030 at x4, Sun-Hays80 img_001-030 HR); ``benchmark``: Set5, Set14, B100, Urban100 at every
#: scale the repository has (1114 files); ``full``: all 1274 files (adds Sun-Hays80 031-080 and the x8 LR
#: versions, under ``extra/SunHays80``, see :func:`selfexsr_target`).
SELFEXSR_SUBSETS = ("course", "benchmark", "full")

_BENCHMARK_FOLDERS = {"Set5": "Set5", "Set14": "Set14", "BSD100": "B100", "Urban100": "Urban100"}
_SRF_NAME = re.compile(r"img_(?P<n>\d{3})_SRF_(?P<s>\d+)_(?P<kind>HR|LR)\.png")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_SUNHAYS_TRAIN = 30  # Sun-Hays 80 photographs 001-030 are the notebooks' training set (train/SunHays80)


@dataclass(frozen=True)
class RemoteFile:
    """One file of the SelfExSR repository.

    Attributes:
        path: path inside the repository (``"data/Set5/image_SRF_2/img_001_SRF_2_HR.png"``).
        target: where it goes, relative to the data root (``"benchmark/Set5/image_SRF_2/img_001_SRF_2_HR.png"``).
        sha256: its SHA-256 (lower-case hex).
    """

    path: str
    target: str
    sha256: str


@dataclass
class FetchSummary:
    """What :func:`fetch_selfexsr` did: the files it ``downloaded`` and those already ``present`` (right hash)."""

    root: Path
    downloaded: list[Path] = field(default_factory=list)
    present: list[Path] = field(default_factory=list)


def read_manifest(path: str | os.PathLike | None = None) -> dict[str, str]:
    """Read a checksum list: ``{path in the repository: sha256}``, in file order.

    Format: one ``<path> <sha256>`` a line (a path has no spaces); blank lines and lines starting with ``#``
    are skipped. Default: :data:`SELFEXSR_MANIFEST`.

    Raises:
        FileNotFoundError: missing list.
        ValueError: a malformed line, a digest that is not 64 hex digits, an absolute path or one with ``..``,
            or a path listed twice (the message names the list and the line number).
    """
    path = Path(path) if path is not None else SELFEXSR_MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"checksum list not found: {path}")
    out: dict[str, str] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        if len(fields) != 2 or not _HEX64.fullmatch(fields[1].lower()):
            raise ValueError(f"{path}, line {number}: expected '<path> <sha256>' (64 hex digits), got {line!r}")
        name, digest = fields[0], fields[1].lower()
        parts = PurePosixPath(name).parts
        if name.startswith("/") or "\\" in name or ".." in parts or "." in parts:
            raise ValueError(f"{path}, line {number}: path {name!r} must be relative, without '.' or '..'")
        if name in out:
            raise ValueError(f"{path}, line {number}: {name!r} is listed twice")
        out[name] = digest
    return out


def selfexsr_target(path: str) -> str:
    """Where a file of the SelfExSR repository goes under the data root (the layout :mod:`srlib.data.datasets` reads).

    * ``data/<Set>/image_SRF_<s>/<file>`` -> ``benchmark/<Set>/image_SRF_<s>/<file>`` for Set5, Set14, Urban100,
      and BSD100 renamed ``B100``;
    * ``data/Sun-Hays80/image_SRF_8/img_NNN_SRF_8_HR.png``, NNN <= 030 -> ``train/SunHays80/img_NNN.png``: the
      photographs the notebooks train on (:func:`srlib.data.default_train_set` reads every image of that folder);
    * the other Sun-Hays 80 photographs (NNN 031-080) -> ``extra/SunHays80/img_NNN.png``, and their x8 LR versions
      ``..._LR.png`` -> ``extra/SunHays80/LR_x8/``: kept out of ``train/`` so that the ``full`` subset does not
      change what the notebooks train on (srlib reads nothing under ``extra/`` by itself).

    Raises:
        ValueError: a path outside these folders (named).
    """
    parts = PurePosixPath(path).parts
    if len(parts) == 4 and parts[0] == "data" and re.fullmatch(r"image_SRF_\d+", parts[2]):
        if parts[1] in _BENCHMARK_FOLDERS:
            return f"benchmark/{_BENCHMARK_FOLDERS[parts[1]]}/{parts[2]}/{parts[3]}"
        m = _SRF_NAME.fullmatch(parts[3])
        if parts[1] == "Sun-Hays80" and m:
            if m["kind"] == "LR":
                return f"extra/SunHays80/LR_x{m['s']}/{parts[3]}"
            return f"{'train' if int(m['n']) <= _SUNHAYS_TRAIN else 'extra'}/SunHays80/img_{m['n']}.png"
    raise ValueError(f"no place in the srlib data layout for SelfExSR file {path!r} (expected "
                     "data/<Set5|Set14|BSD100|Urban100|Sun-Hays80>/image_SRF_<s>/<file>)")


def _in_subset(path: str, subset: str) -> bool:
    parts = PurePosixPath(path).parts
    if subset == "full":
        return True
    if subset == "benchmark":
        return parts[1] in _BENCHMARK_FOLDERS
    m = _SRF_NAME.fullmatch(parts[3])  # course: what the notebooks and the data tests read
    if parts[1] in ("Set5", "Set14"):
        return True
    if parts[1] == "BSD100":
        return parts[2] == "image_SRF_2"
    if parts[1] == "Urban100":
        return parts[2] == "image_SRF_4" and m is not None and int(m["n"]) <= 30
    if parts[1] == "Sun-Hays80":
        return m is not None and m["kind"] == "HR" and int(m["n"]) <= _SUNHAYS_TRAIN
    return False


def selfexsr_files(subset: str = "course", manifest: str | os.PathLike | None = None) -> list[RemoteFile]:
    """The files of one subset (see :data:`SELFEXSR_SUBSETS`), with their targets, in the list's order.

    Raises:
        ValueError: unknown subset, a malformed checksum list, or a path with no place in the layout.
        FileNotFoundError: missing checksum list.
    """
    if subset not in SELFEXSR_SUBSETS:
        raise ValueError(f"unknown SelfExSR subset {subset!r}; choose one of {', '.join(SELFEXSR_SUBSETS)}")
    files = [RemoteFile(p, selfexsr_target(p), h) for p, h in read_manifest(manifest).items()]
    targets = [f.target for f in files]
    if len(set(targets)) != len(targets):
        raise ValueError(f"two files of {manifest or SELFEXSR_MANIFEST} would go to the same place")
    return [f for f in files if _in_subset(f.path, subset)]


def fetch_selfexsr(
    root: str | os.PathLike,
    subset: str = "course",
    *,
    base_url: str = SELFEXSR_BASE_URL,
    manifest: str | os.PathLike | None = None,
    jobs: int = 4,
    keep_on_error: bool = False,
    progress: bool = True,
    timeout: float = 60.0,
) -> FetchSummary:
    """Download one SelfExSR subset file by file into ``root``, each file checked against its SHA-256.

    1. Every target path is looked at first. A file already there with the listed SHA-256 is kept (not
       downloaded again). If any target holds something else (a file with another content, a folder, a
       link to nothing), nothing is downloaded and :class:`DownloadConflictError` names them: srlib never
       deletes or overwrites a user's file.
    2. The missing files are fetched (``jobs`` at a time) with :func:`download_file`: pooch streams each to a
       temporary file next to its target and moves it into place only once its SHA-256 matches.
    3. If anything fails (network, HTTP error, a wrong hash, Ctrl-C), the running downloads finish, the files
       this call downloaded are removed (unless ``keep_on_error``: they are verified, and a second run skips
       them) and the folders it created are removed when empty. Files and folders that were there before are
       never touched.

    Args:
        root: data root (e.g. :func:`srlib.config.data_dir`).
        subset: ``"course"``, ``"benchmark"`` or ``"full"`` (:data:`SELFEXSR_SUBSETS`).
        base_url: the repository's raw-file address at the commit (a file's URL is ``base_url + path``);
            a local mirror or test server can stand in.
        manifest: checksum list (default :data:`SELFEXSR_MANIFEST`).
        jobs: parallel downloads (>= 1).
        keep_on_error: keep the verified files of a failed run.
        progress: one tqdm bar over the files (stderr).
        timeout: seconds to wait for the server, per request.

    Returns:
        :class:`FetchSummary` with the downloaded and the already present files.

    Raises:
        DownloadConflictError: a target exists with another content (nothing was downloaded).
        ChecksumError: a downloaded file has another SHA-256 (the file is named; nothing of it is kept).
        ConnectionError: no network / server unreachable.
        OSError: HTTP error status, disk error.
        ValueError: bad ``subset``, ``jobs``, or checksum list.
    """
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs must be an integer >= 1, got {jobs!r}")
    root = Path(root)
    base = base_url if base_url.endswith("/") else base_url + "/"
    files = selfexsr_files(subset, manifest)
    summary = FetchSummary(root)
    todo: list[RemoteFile] = []
    conflicts: list[Path] = []
    for f in files:  # 1. look before writing anything
        dest = root / f.target
        if dest.is_file():
            (summary.present if file_digest(dest) == f.sha256 else conflicts).append(dest)
        elif os.path.lexists(dest):
            conflicts.append(dest)
        else:
            todo.append(f)
    if conflicts:
        raise DownloadConflictError(conflicts)
    if not todo:
        return summary

    created: list[Path] = []  # folders this call made, outermost first
    written: list[Path] = []
    lock = threading.Lock()

    def one(f: RemoteFile) -> None:
        dest = root / f.target
        if os.path.lexists(dest):  # appeared since step 1: leave it alone
            raise DownloadConflictError([dest])
        download_file(base + f.path, dest, sha256=f.sha256, progress=False, timeout=timeout)
        with lock:
            written.append(dest)

    bar = None
    try:
        for folder in sorted({(root / f.target).parent for f in todo}):
            for p in reversed(_missing_folders(folder)):
                try:
                    p.mkdir()
                except FileExistsError:
                    continue
                created.append(p)
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(todo), unit="file", desc=f"SelfExSR {subset}", file=sys.stderr)
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            futures = [pool.submit(one, f) for f in todo]
            try:
                for future in as_completed(futures):
                    future.result()
                    if bar is not None:
                        bar.update(1)
            except BaseException:
                pool.shutdown(wait=True, cancel_futures=True)  # running downloads end; queued ones never start
                raise
    except BaseException:
        if not keep_on_error:
            for p in written:
                p.unlink(missing_ok=True)
        _remove_empty(reversed(created))
        raise
    finally:
        if bar is not None:
            bar.close()
    summary.downloaded = sorted(written)
    return summary


def _selfexsr_command(args, root: Path, subset: str) -> int:
    base = args.base_url or SELFEXSR_BASE_URL
    files = selfexsr_files(subset, args.manifest)
    if args.dry_run:
        for f in files:
            print(f"{base.rstrip('/')}/{f.path} -> {root / f.target}  (sha256={f.sha256})")
        print(f"{len(files)} files (SelfExSR {subset}, commit {SELFEXSR_COMMIT[:7]}) into {root}")
        return 0
    print(f"downloading {len(files)} files (SelfExSR {subset}) from {base} into {root}", file=sys.stderr)
    try:
        summary = fetch_selfexsr(root, subset, base_url=base, manifest=args.manifest, jobs=args.jobs,
                                 keep_on_error=args.keep_on_error, progress=not args.no_progress)
    except DownloadConflictError as err:
        print(f"error: {err} (nothing was downloaded).", file=sys.stderr)
        return 1
    except (ChecksumError, ConnectionError, TimeoutError, OSError) as err:
        kept = ("the files verified so far were kept (a second run skips them)" if args.keep_on_error
                else "nothing of this run was kept")
        print(f"error: {err} ({kept}; run the command again, and without the data the notebooks use bundled "
              "sample photographs).", file=sys.stderr)
        return 1
    print(f"done: {root} ({len(summary.downloaded)} downloaded, {len(summary.present)} already present and "
          "verified)", file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point (``python -m srlib.data.download`` / ``srlib-download``).

    Without arguments: the SelfExSR ``course`` subset into the data root (:func:`fetch_selfexsr`).
    Exit status 0 on success, 1 on a failed download or a file in the way (one line on stderr), 2 on usage errors.
    """
    parser = argparse.ArgumentParser(
        prog="python -m srlib.data.download",
        description="Download the SelfExSR images (file by file, SHA-256 checked), DIV2K or the EDSR benchmark "
                    "archive; never overwrites your files.",
    )
    parser.add_argument("dataset", nargs="?", default="selfexsr", choices=("selfexsr", "benchmark", "div2k"),
                        help="selfexsr (default): SelfExSR images from a fixed commit; benchmark: Set5, Set14, "
                             "B100, Urban100 (--source); div2k: DIV2K archives")
    parser.add_argument("--root", type=Path, default=None, help="data folder (default: $SRLIB_DATA or <repo>/data)")
    parser.add_argument("--subset", choices=SELFEXSR_SUBSETS, default="course",
                        help="selfexsr: course (the 404 files the notebooks use, 129 MB), benchmark (1114 files), "
                             "full (1274 files, 387 MB)")
    parser.add_argument("--source", choices=("edsr", "selfexsr"), default="edsr",
                        help="benchmark source: edsr (benchmark.tar) or selfexsr (= selfexsr --subset benchmark)")
    parser.add_argument("--scales", type=int, nargs="+", default=[2, 3, 4], help="DIV2K LR scales")
    parser.add_argument("--splits", nargs="+", default=["train", "valid"], choices=("train", "valid"))
    parser.add_argument("--no-hr", action="store_true", help="DIV2K: skip the HR archives")
    parser.add_argument("--base-url", default=None,
                        help=f"mirror folder URL (DIV2K default {DIV2K_BASE_URL}; SelfExSR default "
                             f"{SELFEXSR_BASE_URL})")
    parser.add_argument("--manifest", type=Path, default=None,
                        help="SelfExSR checksum list (default: the one shipped with srlib)")
    parser.add_argument("--jobs", type=int, default=4, help="SelfExSR: parallel downloads (default 4)")
    parser.add_argument("--keep-on-error", action="store_true",
                        help="SelfExSR: keep the verified files of a failed run (a second run skips them)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--keep-archives", action="store_true")
    parser.add_argument("--force", action="store_true", help="download an archive again even if it exists")
    parser.add_argument("--dry-run", action="store_true", help="list what would be downloaded")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error(f"--jobs must be >= 1, got {args.jobs}")
    root = args.root if args.root is not None else data_dir()

    if args.dataset == "selfexsr" or (args.dataset == "benchmark" and args.source == "selfexsr"):
        try:
            return _selfexsr_command(args, root, args.subset if args.dataset == "selfexsr" else "benchmark")
        except (FileNotFoundError, ValueError) as err:  # the checksum list: missing or malformed
            parser.error(str(err))
    if args.dataset == "div2k":
        archives = div2k_archives(args.splits, args.scales, hr=not args.no_hr,
                                  base_url=args.base_url or DIV2K_BASE_URL)
    else:
        archives = [BENCHMARK_SOURCES[args.source]]
    if args.dry_run:
        for a in archives:
            target = root / a.subdir if a.subdir else root
            print(f"{a.url} -> {target}  (sha256={a.sha256}, md5={a.md5})")
        return 0
    for a in archives:
        try:
            fetch(a, root, keep_archive=args.keep_archives, force=args.force, progress=not args.no_progress)
        except DownloadConflictError as err:  # the archive would replace files of the user's: nothing moved
            print(f"error: {a.filename}: {err} (nothing was extracted).", file=sys.stderr)
            return 1
        except (TimeoutError, ConnectionError):  # offline, DNS, refused: download_file removed the partial file
            print(f"error: cannot download {a.url} (no network connection, or the server cannot be reached); "
                  "check the network connection and try again (nothing was kept, and without the data the "
                  "notebooks use bundled sample photographs).", file=sys.stderr)
            return 1
    print(f"done: {root}", file=sys.stderr)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
