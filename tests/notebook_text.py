"""Reading executed notebooks as text: headings, prose numbers and output numbers (used by the notebook tests)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Iterable

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
#: The course notebooks (not the solutions): 00a_super_resolution, 00b_..., 01_... 06_...
COURSE = sorted(NOTEBOOKS.glob("[0-9][0-9]*_*.ipynb"),
                key=lambda p: (p.name[:2], not p.name[2].isalpha(), p.name))  # course order: 00a, 00b, 01, ...
SOLUTIONS = sorted((NOTEBOOKS / "solutions").glob("*.ipynb"))

#: The H2 scheme every notebook follows, in this order (issue 13: one structure).
SCHEME = ("Context", "Step by step", "Paper figures", "Training", "Evaluation", "Paper vs code", "Exercises")
HEADING = re.compile(r"^## (\d+)\. (" + "|".join(re.escape(s) for s in SCHEME) + r")\b")
#: A line carrying this (invisible) marker quotes its numbers from a paper or defines them; they are not checked.
QUOTED = "<!-- quoted -->"

#: Words after which a dotted number is a reference (section, equation, version), not a quantity.
_REFERENCE_WORDS = r"(?:\bsec(?:tion|s)?\.?|§|\beqs?\.?|\bequations?|\bfigs?\.?|\bfigures?|\btables?|\balgorithm|" \
    r"\btorch|\bpython|\bversion|\bjupyterlab|\bnumpy|\bexercises?)"
_NUMBER = re.compile(r"(?<![\w.])[-−]?\d+\.\d+(?![\w.]*\d)")
_FLOAT = re.compile(r"[-−]?\d+\.\d+(?:[eE][-+]?\d+)?|[-−]?\d+(?:[eE][-+]?\d+)?")


def load(nb: Path) -> list[dict[str, Any]]:
    return json.loads(nb.read_text())["cells"]


def text(cell: dict[str, Any]) -> str:
    src = cell["source"]
    return "".join(src) if isinstance(src, list) else src


def h2_headings(cells: Iterable[dict[str, Any]]) -> list[str]:
    out = []
    for c in cells:
        if c["cell_type"] != "markdown":
            continue
        in_fence = False
        for line in text(c).splitlines():
            if line.startswith("```"):
                in_fence = not in_fence
            elif not in_fence and line.startswith("## "):
                out.append(line.strip())
    return out


def output_text(cell: dict[str, Any]) -> str:
    parts = []
    for o in cell.get("outputs", []):
        if o.get("output_type") == "stream":
            parts.append("".join(o["text"]) if isinstance(o["text"], list) else o["text"])
        for mime in ("text/plain", "text/markdown", "text/html", "text/latex"):
            val = o.get("data", {}).get(mime)
            if val is not None:
                parts.append("".join(val) if isinstance(val, list) else val)
    return "\n".join(parts)


def prose_numbers(markdown: str) -> list[str]:
    """Decimal numbers written in prose: not in $maths$, `code`, fenced blocks, links, or lines marked QUOTED."""
    found = []
    in_fence = False
    for line in markdown.splitlines():
        if line.lstrip().startswith("```"):
            in_fence = not in_fence
            continue
        if in_fence or QUOTED in line:
            continue
        line = re.sub(r"\$\$.*?\$\$|\$[^$]*\$", " ", line)      # maths
        line = re.sub(r"`[^`]*`", " ", line)                     # code
        line = re.sub(r"\]\([^)]*\)", "]", line)                 # link targets
        line = re.sub(r"\b(?:arXiv:?\s*|doi:?\s*|v)\d+\.\d+\S*", " ", line, flags=re.I)  # identifiers
        line = re.sub(r"^#+\s*\d+(?:\.\d+)*", " ", line)       # section numbers of headings
        line = re.sub(r"(?:\bexercises?\s+|\*\*)\d\d[a-z]?\.\d+\b", " ", line, flags=re.I)  # exercise keys
        line = re.sub(_REFERENCE_WORDS + r"\s*\d+(?:\.\d+)*(?:\s*[-–,]\s*\d+(?:\.\d+)*)*", " ", line, flags=re.I)
        found.extend(m.group(0).replace("−", "-") for m in _NUMBER.finditer(line))
    return found


def available_numbers(cells: list[dict[str, Any]], upto: int) -> set[str]:
    """Every number printed by (or written in) the code cells before index ``upto``, as strings."""
    pool: set[str] = set()
    for c in cells[:upto]:
        if c["cell_type"] != "code":
            continue
        for chunk in (output_text(c), text(c)):
            pool.update(m.group(0).replace("−", "-") for m in _FLOAT.finditer(chunk))
    return pool


def is_sourced(number: str, pool: set[str]) -> bool:
    """``number`` (as written, with d decimals) equals some pooled number rounded to d decimals."""
    decimals = len(number.split(".")[1])
    target = float(number)
    for s in pool:
        try:
            v = float(s)
        except ValueError:
            continue
        if abs(v) < 1e300 and round(v, decimals) == round(target, decimals) and abs(round(v, decimals) - target) < 1e-12:
            return True
        # magnitudes written without sign ("falls by 0.37 dB" for a printed -0.37)
        if abs(round(-v, decimals) - target) < 1e-12:
            return True
    return False


def unsourced_numbers(cells: list[dict[str, Any]]) -> list[tuple[int, str, str]]:
    """(cell index, number, line) for every prose number that no earlier code cell printed or wrote."""
    bad = []
    for i, c in enumerate(cells):
        if c["cell_type"] != "markdown":
            continue
        nums = prose_numbers(text(c))
        if not nums:
            continue
        pool = available_numbers(cells, i)
        for n in nums:
            if not is_sourced(n, pool):
                line = next((ln for ln in text(c).splitlines() if n in ln), "")
                bad.append((i, n, line.strip()[:160]))
    return bad
