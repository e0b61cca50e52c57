"""Build the course site (Jupyter Book 1.x) from the notebooks' stored outputs, offline.

    python docs/site/build.py                  # the site, solutions included -> docs/site/_build/html/index.html
    python docs/site/build.py --no-solutions   # the same without the "Solutions" part (a site for students)
    python docs/site/build.py --strict         # Sphinx warnings are errors (what tests/test_site.py builds)

Run it in the project's environment (``pip install -r requirements.txt``, or ``pip install -e '.[site]'``): the
syllabus lists the exercises of this checkout's :func:`srlib.course.exercises.list_exercises`. Nothing is executed
and nothing is downloaded: the pages show the outputs stored in ``notebooks/*.ipynb`` (an explorer as its stored static
picture), MathJax comes from the ``sphinx-mathjax-offline`` package.

What the script does, in a scratch folder ``<out>/source`` (made afresh on every build):

1. copies the pages of ``docs/site`` (``_config.yml``, ``_toc.yml``, ``intro.md``, ``run_it_yourself.md``),
   the repository's ``README.md`` and ``data/README.md``;
2. copies each notebook named in ``_toc.yml`` from ``notebooks/`` (``notebooks/X``) or
   ``notebooks/solutions/`` (``solutions/X``), without its stored widget state (the site shows the static
   picture, no widget JavaScript). A toc name whose file is missing is matched by the part after its number
   (``00b_non_local_attention`` finds ``00_non_local_attention.ipynb`` while the old name is on disk);
3. writes ``syllabus.md`` from ``syllabus.yml`` (objectives, prerequisites, time: the one data file a teacher
   edits) and, generated so that they cannot drift, each notebook's sections (its ``##``/``###`` headings;
   a heading ending in ``*(deep dive)*`` is a deep-dive section, every other one core) and its exercises
   (title, difficulty, points, checked or open);
4. runs ``jupyter-book build`` on it; the HTML lands in ``<out>/_build/html``.

Raises (exits with) an error naming the file when a notebook of the toc or of ``syllabus.yml`` is missing, or
when the two disagree on the notebooks.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

SITE = Path(__file__).resolve().parent
ROOT = SITE.parents[1]
if str(ROOT) not in sys.path:  # the exercises of this checkout, also without `pip install -e .`
    sys.path.insert(0, str(ROOT))
NOTEBOOKS = ROOT / "notebooks"
SOLUTIONS = NOTEBOOKS / "solutions"
DEFAULT_OUT = SITE / "_build"
#: pages of docs/site copied as they are
PAGES = ("intro.md", "run_it_yourself.md")
#: repository documents shown on the site (path in the repository = path on the site)
REPO_DOCS = ("README.md", "data/README.md")
#: the toc part left out by --no-solutions
SOLUTIONS_CAPTION = "Solutions"
#: marker of a deep-dive section heading in the notebooks (core sections have none)
DEEP_DIVE = re.compile(r"\s*\*\(deep dive\)\*\s*$")


class SiteError(RuntimeError):
    """A page or notebook the site needs is missing or inconsistent."""


# ------------------------------------------------------------------------------------------------------------
# notebooks
# ------------------------------------------------------------------------------------------------------------
def find_notebook(name: str, folder: Path) -> Path:
    """The notebook of toc name ``name`` (e.g. ``00b_non_local_attention``): ``folder/name.ipynb``.

    Raises:
        SiteError: the notebook is missing (the toc names a notebook that is not on disk).
    """
    path = folder / f"{name}.ipynb"
    if not path.exists():
        raise SiteError(f"the table of contents names {name!r} but there is no notebook {path}")
    return path


def copy_notebook(src: Path, dst: Path) -> None:
    """Copy a notebook without its stored widget state (so that no widget JavaScript is loaded)."""
    nb = json.loads(src.read_text(encoding="utf-8"))
    nb.get("metadata", {}).pop("widgets", None)
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_text(json.dumps(nb, ensure_ascii=False, indent=1), encoding="utf-8")


def _markdown_parser():
    """The Markdown parser MyST uses (markdown-it with dollar math), to read headings as the site renders them."""
    from markdown_it import MarkdownIt
    from mdit_py_plugins.dollarmath import dollarmath_plugin

    return MarkdownIt("commonmark").use(dollarmath_plugin, double_inline=True)


def notebook_sections(nb_path: Path, max_level: int = 3) -> dict[str, Any]:
    """Title and sections of a notebook, read from its Markdown cells.

    Returns:
        ``{"title": str, "sections": [{"level": 2|3, "text": str, "deep": bool, "slug": str}, ...]}``:
        ``text`` is the heading's Markdown without the deep-dive marker, ``slug`` the anchor MyST gives the
        heading (``myst_heading_anchors: 3``; the same rule, unique within the page).
    """
    from myst_parser.mdit_to_docutils.base import default_slugify

    md = _markdown_parser()
    nb = json.loads(nb_path.read_text(encoding="utf-8"))
    title, sections, slugs = None, [], set()
    for cell in nb["cells"]:
        if cell["cell_type"] != "markdown":
            continue
        source = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
        tokens = md.parse(source)
        for i, tok in enumerate(tokens):
            if tok.type != "heading_open":
                continue
            level, inline = int(tok.tag[1]), tokens[i + 1]
            if level > max_level:
                continue
            plain = "".join(c.content for c in inline.children or [] if c.type in ("text", "code_inline"))
            slug, n = default_slugify(plain), 1
            base = slug
            while slug in slugs:  # MyST's compute_unique_slug
                slug, n = f"{base}-{n}", n + 1
            slugs.add(slug)
            text = inline.content.strip()
            if level == 1 and title is None:
                title = text
            elif level >= 2:
                sections.append({"level": level, "text": DEEP_DIVE.sub("", text), "deep": bool(DEEP_DIVE.search(text)),
                                 "slug": slug})
    if title is None:
        raise SiteError(f"{nb_path} has no title (a '# ...' heading)")
    return {"title": title, "sections": sections}


# ------------------------------------------------------------------------------------------------------------
# toc
# ------------------------------------------------------------------------------------------------------------
def load_toc(with_solutions: bool) -> dict[str, Any]:
    toc = yaml.safe_load((SITE / "_toc.yml").read_text(encoding="utf-8"))
    if not with_solutions:
        toc["parts"] = [p for p in toc["parts"] if p.get("caption") != SOLUTIONS_CAPTION]
    return toc


def toc_files(toc: dict[str, Any]) -> list[str]:
    return [ch["file"] for part in toc["parts"] for ch in part["chapters"]]


# ------------------------------------------------------------------------------------------------------------
# syllabus
# ------------------------------------------------------------------------------------------------------------
def _exercises_of(prefix: str) -> list:
    """Registered exercises of notebook ``prefix`` (e.g. ``"00b"``)."""
    from srlib.course.exercises import list_exercises

    return list_exercises(prefix)


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _difficulty_level(difficulty: str) -> str:
    """'★★ practice' -> 'practice' (the key of ``exercise_minutes`` in syllabus.yml)."""
    return difficulty.split()[-1]


def render_syllabus(plan: dict[str, Any], notebooks: list[tuple[str, Path]], with_solutions: bool) -> str:
    """The Markdown of the syllabus page.

    Args:
        plan: ``syllabus.yml``.
        notebooks: ``[(toc name, source notebook), ...]`` in reading order.
        with_solutions: link each notebook's solutions page.
    Raises:
        SiteError: ``syllabus.yml`` and the toc list different notebooks, or an entry misses a field.
    """
    entries = {e["notebook"]: e for e in plan["notebooks"]}
    names = [name for name, _ in notebooks]
    if sorted(entries) != sorted(names):
        raise SiteError(f"syllabus.yml lists {sorted(entries)}, the toc {sorted(names)}: they must agree")
    minutes = plan["exercise_minutes"]
    info = {name: notebook_sections(path) for name, path in notebooks}
    exercises = {name: _exercises_of(name.split("_")[0]) for name in names}

    out = [plan["intro"].strip(), ""]
    # overview table
    out += ["## At a glance", "",
            "Minutes, estimated for a student at the level of the prerequisites: reading the notebook (prose and "
            "code), running it on a laptop CPU, and doing all its exercises (from their difficulty: "
            + ", ".join(f"{k} {v} min" for k, v in minutes.items()) + ").", "",
            "| notebook | read | run (CPU) | exercises | sections (core + deep dive) | exercises (points) |",
            "|---|---:|---:|---:|---|---|"]
    total = {"read": 0, "run": 0, "ex": 0}
    for name in names:
        e, sec, exs = entries[name], info[name]["sections"], exercises[name]
        ex_min = sum(minutes[_difficulty_level(x.difficulty)] for x in exs)
        total["read"] += e["time"]["read"]
        total["run"] += e["time"]["run"]
        total["ex"] += ex_min
        core = sum(not s["deep"] for s in sec)
        out.append(f"| [{_md_cell(info[name]['title'])}](notebooks/{name}.ipynb) | {e['time']['read']} | "
                   f"{e['time']['run']} | {ex_min} | {core} + {len(sec) - core} | "
                   f"{len(exs)} ({sum(x.points for x in exs)}) |")
    hours = (total["read"] + total["run"] + total["ex"]) / 60
    out += [f"| **all** | **{total['read']}** | **{total['run']}** | **{total['ex']}** | | |", "",
            f"In all about {hours:.0f} hours.", ""]

    for name in names:
        e, nb, exs = entries[name], info[name], exercises[name]
        out += [f"## {nb['title']}", "",
                f"[Read it](notebooks/{name}.ipynb) · source `notebooks/{name}.py`"
                + (f" · [worked solutions](solutions/{name}_solutions.ipynb)" if with_solutions else ""), ""]
        out += ["**After this notebook, a student can:**", ""] + [f"- {o}" for o in e["objectives"]] + [""]
        req = [f"[{r}](notebooks/{_name_of(r, names)}.ipynb)" for r in e.get("requires", [])]
        out += ["**Prerequisites.** "
                + (("Notebooks " + ", ".join(req) + ". ") if req else "No earlier notebook. ")
                + " ".join(e.get("background", [])), ""]
        t = e["time"]
        ex_min = sum(minutes[_difficulty_level(x.difficulty)] for x in exs)
        out += [f"**Time.** Read about {t['read']} min, run about {t['run']} min on a CPU, exercises about "
                f"{ex_min} min.", ""]
        core = [s for s in nb["sections"] if not s["deep"]]
        deep = [s for s in nb["sections"] if s["deep"]]
        for label, group in (("Core sections", core), ("Deep-dive sections", deep)):
            if not group:
                out += [f"**{label}:** none.", ""]
                continue
            out += [f"**{label}:**", ""]
            out += [("  " if s["level"] == 3 else "") + f"- [{s['text']}](notebooks/{name}.ipynb#{s['slug']})"
                    for s in group]
            out.append("")
        if exs:
            out += ["**Exercises** (`from srlib.course.exercises import check, hint, solution`):", "",
                    "| exercise | difficulty | points | answer |", "|---|---|---:|---|"]
            out += [f"| {x.key} {_md_cell(x.title)} | {x.difficulty} | {x.points} | "
                    f"{'checked by `check`' if x.checker is not None else 'open question'} |" for x in exs]
            out.append("")
    return "\n".join(out) + "\n"


def _name_of(prefix: str, names: list[str]) -> str:
    for n in names:
        if n.split("_")[0] == prefix:
            return n
    raise SiteError(f"syllabus.yml: prerequisite {prefix!r} is not a notebook of the toc ({names})")


# ------------------------------------------------------------------------------------------------------------
# build
# ------------------------------------------------------------------------------------------------------------
def assemble(source: Path, with_solutions: bool = True) -> list[str]:
    """Lay out the book's sources in ``source`` (emptied first); returns the toc's files."""
    if source.exists():
        shutil.rmtree(source)
    source.mkdir(parents=True)
    toc = load_toc(with_solutions)
    (source / "_toc.yml").write_text(yaml.safe_dump(toc, sort_keys=False), encoding="utf-8")
    shutil.copy2(SITE / "_config.yml", source / "_config.yml")
    for page in PAGES:
        shutil.copy2(SITE / page, source / page)
    for doc in REPO_DOCS:
        (source / doc).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / doc, source / doc)
    files = toc_files(toc)
    notebooks: list[tuple[str, Path]] = []
    for f in files:
        folder, _, name = f.rpartition("/")
        if folder in ("notebooks", "solutions"):
            src = find_notebook(name, NOTEBOOKS if folder == "notebooks" else SOLUTIONS)
            copy_notebook(src, source / folder / f"{name}.ipynb")
            if folder == "notebooks":
                notebooks.append((name, src))
    plan = yaml.safe_load((SITE / "syllabus.yml").read_text(encoding="utf-8"))
    (source / "syllabus.md").write_text(render_syllabus(plan, notebooks, with_solutions), encoding="utf-8")
    return files


def build(out: Path = DEFAULT_OUT, *, with_solutions: bool = True, strict: bool = False, quiet: bool = False) -> Path:
    """Assemble and build the site; returns the folder of ``index.html``.

    Raises:
        SiteError: missing or inconsistent sources; subprocess.CalledProcessError: the Sphinx build failed
        (with ``strict``: on the first warning).
    """
    out = Path(out).resolve()
    source = out / "source"
    assemble(source, with_solutions)
    html = out / "_build" / "html"
    if html.exists():  # no stale pages (e.g. solutions from an earlier build)
        shutil.rmtree(html)
    cmd = [sys.executable, "-c", "from jupyter_book.cli.main import main; main()", "build", str(source), "--path-output", str(out),
           "--builder", "html"]
    if strict:
        cmd += ["--warningiserror", "--nitpick", "--keep-going"]
    if quiet:
        cmd += ["--quiet"]
    subprocess.run(cmd, check=True, cwd=ROOT)
    return html


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"build folder (default {DEFAULT_OUT})")
    parser.add_argument("--no-solutions", action="store_true", help="leave the worked solutions out")
    parser.add_argument("--strict", action="store_true", help="Sphinx warnings are errors (-W --keep-going)")
    parser.add_argument("--quiet", action="store_true", help="less output")
    args = parser.parse_args(argv)
    try:
        html = build(args.out, with_solutions=not args.no_solutions, strict=args.strict, quiet=args.quiet)
    except SiteError as err:
        print(f"site: {err}", file=sys.stderr)
        return 2
    except subprocess.CalledProcessError as err:
        print(f"site: jupyter-book failed (exit status {err.returncode})", file=sys.stderr)
        return 1
    print(f"site: open {html / 'index.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
