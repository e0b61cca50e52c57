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
fixed commit :data:`srlib.data.selfexsr.SELFEXSR_COMMIT` (``raw.githubusercontent.com`` addresses), each checked against its
SHA-256 in the list shipped with srlib (``srlib/data/selfexsr-8f6dd8c.sha256``, 1274 files), so a download gives
exactly the data the notebooks' stored outputs were made with. See :func:`srlib.data.selfexsr.fetch_selfexsr`.

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
import re
import shutil
import stat
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Iterable, Sequence

from srlib.config import data_dir
from srlib.data.fetching import (_CHUNK, ChecksumError, DownloadConflictError, _missing_folders, _remove_empty,
                                 download_file, file_digest, verify_checksum)
from srlib.data.selfexsr import SELFEXSR_BASE_URL, SELFEXSR_SUBSETS, _selfexsr_command

__all__ = [
    "Archive",
    "ChecksumError",
    "DownloadConflictError",
    "UnsafeArchiveError",
    "DIV2K_BASE_URL",
    "BENCHMARK_SOURCES",
    "div2k_archives",
    "file_digest",
    "verify_checksum",
    "download_file",
    "safe_extract",
    "fetch",
    "main",
]

DIV2K_BASE_URL = "https://data.vision.ee.ethz.ch/cvl/DIV2K/"
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
#: file from a fixed commit with per-file SHA-256 (:func:`srlib.data.selfexsr.fetch_selfexsr`, subset ``"benchmark"``).
BENCHMARK_SOURCES = {
    "edsr": Archive(
        "https://cv.snu.ac.kr/research/EDSR/benchmark.tar", "benchmark.tar", "",
        description="Set5, Set14, B100, Urban100 (EDSR-PyTorch benchmark.tar)",
    ),
}

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




def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point (``python -m srlib.data.download`` / ``srlib-download``).

    Without arguments: the SelfExSR ``course`` subset into the data root (:func:`srlib.data.selfexsr.fetch_selfexsr`).
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
