"""Downloading one file safely: streamed to a temporary file, checked (SHA-256 / MD5), moved into place.

The primitives behind :mod:`srlib.data.download` (archives: DIV2K, the EDSR benchmark archive) and
:mod:`srlib.data.selfexsr` (the SelfExSR images, file by file): :func:`download_file`, :func:`file_digest`,
:func:`verify_checksum`, and the errors :class:`ChecksumError` and :class:`DownloadConflictError`. Both modules
re-export what their callers need.
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path
from typing import Iterable, Sequence


__all__ = ["ChecksumError", "DownloadConflictError", "download_file", "file_digest", "verify_checksum"]

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
