"""The run folder lock: one writer per run folder; stale locks and temporaries of a killed run cleaned."""

from __future__ import annotations

import contextlib
import datetime
import errno
import json
import os
import platform
import sys
from pathlib import Path
from typing import Any, Mapping



try:  # POSIX advisory locks (the kernel drops them when the holder dies, even by kill -9)
    import fcntl
except ImportError:  # pragma: no cover - Windows: PID-based stale detection only
    fcntl = None  # type: ignore[assignment]

def _note(msg: str) -> None:
    """A one-line note on stderr (the run lock, cleaned temporary files, config overrides)."""
    print(f"srlib.train: {msg}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------------------------------
# The run folder lock
# ----------------------------------------------------------------------------------------------------------
#: Name of the lock file in a run folder while a training writes there (JSON: pid, host, start time).
LOCK_NAME = ".srlib-train.lock"

#: Temporary files of an interrupted checkpoint write (``checkpoint._atomic_write``: ``.<name>.<random>.tmp``).
_STALE_PATTERNS = (".last.pt.*.tmp", ".best.pt.*.tmp", ".history.json.*.tmp")


class RunLockedError(RuntimeError):
    """Another live process trains into the same run folder (names the folder, its PID and host)."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


class _RunLock:
    """An exclusive lock on a run folder: ``out_dir/.srlib-train.lock`` holding the owner's PID, host and start.

    Held with ``fcntl.flock`` on the open file, which the kernel releases when the process ends in any way
    (even ``kill -9``): a lock file nobody holds is stale and is taken over, with a note naming the dead
    process. Where ``flock`` is unavailable, a lock of a PID that no longer runs on this host is taken over.
    A lock left by another host is never taken over automatically (its process cannot be checked from here).
    """

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = Path(out_dir)
        self.path = self.out_dir / LOCK_NAME
        self.fd: int | None = None
        self.created_dir = False

    def _describe(self, holder: Mapping[str, Any]) -> str:
        return (f"PID {holder.get('pid', '?')} on host {holder.get('host', '?')}"
                + (f", started {holder['started']}" if holder.get("started") else ""))

    @staticmethod
    def _read(fd: int) -> dict[str, Any]:
        try:
            os.lseek(fd, 0, os.SEEK_SET)
            text = os.read(fd, 4096).decode("utf-8", "replace").strip()
            return json.loads(text) if text else {}
        except (OSError, ValueError):
            return {"pid": "?", "host": "?"}

    def acquire(self) -> "_RunLock":
        """Take the lock (creating ``out_dir`` if needed).

        Raises:
            RunLockedError: a live process holds it (names the folder, the PID and the host), or a lock
                written on another host whose process cannot be checked.
            OSError: the folder cannot be created or written.
        """
        self.created_dir = not self.out_dir.exists()
        self.out_dir.mkdir(parents=True, exist_ok=True)
        host = platform.node()  # the host name (uname), without the socket module
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                if fcntl is not None:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as err:
                holder = self._read(fd)
                os.close(fd)
                if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise RunLockedError(
                        f"run folder {self.out_dir} is in use by another training ({self._describe(holder)}); "
                        "wait for it to end, or choose another --out / out_dir") from None
                raise
            try:  # the file may have been removed by the previous holder between our open and our lock
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        previous = self._read(fd)
        if previous:
            pid = previous.get("pid")
            other_host = previous.get("host") not in (None, host)
            alive = isinstance(pid, int) and not other_host and _pid_alive(pid) and fcntl is None
            if other_host or alive:
                os.close(fd)
                raise RunLockedError(
                    f"run folder {self.out_dir} is locked by {self._describe(previous)}"
                    + ("; that host's process cannot be checked from here: if it has ended, delete "
                       f"{self.path}" if other_host else "") + "; or choose another --out / out_dir")
            _note(f"took over the stale lock of {self.out_dir} left by {self._describe(previous)} "
                  "(that process is no longer running)")
        info = {"pid": os.getpid(), "host": host,
                "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, json.dumps(info).encode())
        os.fsync(fd)
        self.fd = fd
        return self

    def release(self, *, failed: bool = False) -> None:
        """Remove the lock file and drop the lock; after a failure, also remove ``out_dir`` if this lock
        created it and it is still empty (nothing left behind)."""
        if self.fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)  # before unlocking: a waiting process then re-opens a fresh file
        os.close(self.fd)
        self.fd = None
        if failed and self.created_dir:
            with contextlib.suppress(OSError):
                self.out_dir.rmdir()  # only if empty


def _remove_stale_temporaries(out_dir: Path) -> tuple[int, int]:
    """Delete temporary files of checkpoint writes interrupted by a crash (call with the run lock held).

    Returns:
        ``(number of files, bytes)`` removed; a note on stderr says so when there were any.
    """
    n = size = 0
    names = []
    for pattern in _STALE_PATTERNS:
        for p in sorted(out_dir.glob(pattern)):
            with contextlib.suppress(FileNotFoundError):
                b = p.stat().st_size
                p.unlink()
                n, size = n + 1, size + b
                names.append(p.name)
    if n:
        _note(f"removed {n} stale temporary file(s) of an interrupted checkpoint write from {out_dir} "
              f"({size:,} bytes): {', '.join(names)}")
    return n, size
