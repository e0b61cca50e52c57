"""A fresh clone is self-contained: no product file names a path outside the repository.

Notebooks (the ``.py`` sources and the executed ``.ipynb``, outputs included), ``docs/``, ``srlib/``,
``benchmarks/``, ``README.md`` and ``data/README.md`` must not point a reader at a folder they do not have:

* ``shared/`` (the project's private data and reference folder, e.g. ``../shared/data``);
* a relative path climbing above the repository root (``../x`` from the root, ``../../x`` from ``docs/``);
  ``../README.md`` from ``docs/`` stays inside the repository and is allowed;
* the absolute path of the machine the project was built on (``/work/...``).

Data is found through ``SRLIB_DATA`` and the bundled reference cases through ``srlib.reference.reference_dir``.
"""

from __future__ import annotations

import posixpath
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

#: What is scanned, relative to the repository root: folders (every text file inside) and single files.
SCANNED = ("notebooks", "docs", "srlib", "benchmarks", "README.md", "data/README.md")
TEXT_SUFFIXES = {".py", ".ipynb", ".md", ".txt", ".json", ".csv", ".toml", ".cfg", ".yml", ".yaml", ".sh", ".rst"}

# ``shared/`` as a path component: not part of a longer word (``unshared/``, ``my_shared/``).
_SHARED = re.compile(r"(?<![\w-])shared/")
# A relative path starting with ``../`` (one or more); not the tail of ``.../``, of a name or of ``a/../b``.
_PARENT = re.compile(r"(?<![\w./])((?:\.\./)+)([\w.\-/]*)")
# An absolute path under /work (the build machine's folders).
_ABSOLUTE = re.compile(r"(?<![\w.])/work/")


def offending_paths(text: str, where: str = "") -> list[str]:
    """The outside-the-repository paths named in ``text``, each as ``"line N: <match>"``.

    Args:
        text: file contents.
        where: the file's folder relative to the repository root (``"docs"``, ``""`` for the root): a ``../``
            path is an offence only if, taken from there, it leaves the repository.
    """
    found = []
    depth = len([p for p in Path(where).parts if p not in ("", ".")])
    for n, line in enumerate(text.splitlines(), 1):
        for m in _SHARED.finditer(line):
            found.append(f"line {n}: {line[max(0, m.start() - 20):m.end() + 30].strip()}")
        for m in _ABSOLUTE.finditer(line):
            found.append(f"line {n}: {line[max(0, m.start() - 20):m.end() + 30].strip()}")
        for m in _PARENT.finditer(line):
            target = posixpath.normpath(posixpath.join(where or ".", m.group(1) + m.group(2)))
            if m.group(1).count("../") > depth or target.startswith(".."):
                found.append(f"line {n}: {m.group(0)}")
    return found


def _scanned_files() -> list[Path]:
    files = []
    for entry in SCANNED:
        path = REPO / entry
        if path.is_file():
            files.append(path)
        elif path.is_dir():
            files += [
                p for p in sorted(path.rglob("*"))
                if p.is_file() and p.suffix in TEXT_SUFFIXES
                and not any(part in ("__pycache__", ".ipynb_checkpoints") for part in p.parts)
            ]
    return files


# ----------------------------------------------------------------------------- the checker itself
@pytest.mark.parametrize("text", [
    "export SRLIB_DATA=../shared/data",
    "plain-text copy: `shared/papers/001_995f9ce8915079db.txt`",
    "see ../shared/reference/README.md §1.1",
    "data root: /work/shared/data",
    'Path("../data/benchmark")',
    "open('../../secrets.txt')",
])
def test_checker_flags_outside_paths(text):
    assert offending_paths(text), text


@pytest.mark.parametrize("text", [
    "attention weights are shared across depth (LCoA)",
    "the shared bucket machinery of srlib.attention.buckets",
    "unshared/ and my_shared/ are other names",
    "shapes (B, .../C) and ellipses ... / nothing",
    "tests/reference/README.md",
    "the first row `a/b` and `x/../y` inside the repo",
    "https://github.com/jbhuang0604/SelfExSR",
])
def test_checker_allows_ordinary_text(text):
    assert offending_paths(text) == [], text


def test_checker_resolves_parent_paths_from_the_file():
    assert offending_paths("[README](../README.md)", where="docs") == []  # docs/../README.md is in the repo
    assert offending_paths("[README](../README.md)", where="") != []  # from the root it leaves the repo
    assert offending_paths("../../data", where="docs") != []
    assert offending_paths("../../x", where="srlib/attention") == []
    assert offending_paths("line one\nsee shared/data here", where="") == ["line 2: see shared/data here"]


# ----------------------------------------------------------------------------- the repository
def test_scanned_set_is_not_empty():
    files = {p.relative_to(REPO).as_posix() for p in _scanned_files()}
    assert {"README.md", "data/README.md", "docs/official_code.md", "srlib/reference/__init__.py"} <= files
    assert any(f.startswith("notebooks/") and f.endswith(".ipynb") for f in files)
    assert any(f.startswith("benchmarks/") for f in files)


@pytest.mark.parametrize("path", _scanned_files(), ids=lambda p: p.relative_to(REPO).as_posix())
def test_no_path_outside_the_repository(path: Path):
    text = path.read_text(encoding="utf-8", errors="replace")
    where = path.parent.relative_to(REPO).as_posix()
    found = offending_paths(text, where="" if where == "." else where)
    assert not found, f"{path.relative_to(REPO).as_posix()} names paths outside the repository: " + " | ".join(found)
