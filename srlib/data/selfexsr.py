"""SelfExSR data, file by file: the benchmark and Sun-Hays images at a fixed commit, each checked by SHA-256.

The default download of ``python -m srlib.data.download`` (:func:`fetch_selfexsr`): every file of the ``data/``
folder of https://github.com/jbhuang0604/SelfExSR (Huang, Singh and Ahuja, *Single Image Super-Resolution from
Transformed Self-Exemplars*, CVPR 2015) at :data:`SELFEXSR_COMMIT`, checked against the bundled list of SHA-256
digests (:data:`SELFEXSR_MANIFEST`), placed where :mod:`srlib.data.datasets` looks for it
(:func:`selfexsr_target`). The download primitives (:func:`~srlib.data.fetching.download_file`, checksums,
conflicts) are those of :mod:`srlib.data.fetching`.
"""

from __future__ import annotations

import os
import threading
import re
import sys
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath


from srlib.data.fetching import (ChecksumError, DownloadConflictError, _missing_folders, _remove_empty, download_file,
                                 file_digest)

__all__ = ["SELFEXSR_COMMIT", "SELFEXSR_BASE_URL", "SELFEXSR_MANIFEST", "SELFEXSR_SUBSETS", "RemoteFile",
           "FetchSummary", "read_manifest", "selfexsr_target", "selfexsr_files", "fetch_selfexsr"]

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
