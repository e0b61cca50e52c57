"""The course site (``docs/site/build.py``, Jupyter Book 1.x): built with warnings as errors, then read in a browser.

Fast checks of the build script (no browser, no Sphinx run): deep-dive headings are read from the notebooks,
a renamed notebook is still found, the syllabus covers the eight notebooks of the toc, ``--no-solutions``
leaves the solutions out.

End to end (markers ``site`` and ``browser``): the site is built into a temporary folder with
``--warningiserror`` (no network: nothing is executed, MathJax comes from a package), served by
``http.server`` on 127.0.0.1 and opened page by page in headless Chromium (Debian's ``/usr/bin/chromium``,
driven by the Python ``playwright`` package as in ``tests/test_browser.py``; every request that is not to
127.0.0.1 is blocked and reported). On every page of the toc:

* the equations rendered: MathJax typeset every ``.math`` element (an ``mjx-container`` inside, no
  ``mjx-merror``) and no raw ``$$`` or ``\\(``/``\\[`` delimiter is left in the prose;
* every ``<img>`` loaded (``naturalWidth > 0``);
* every link to a page of the site resolves (the server answers 200) and its ``#fragment`` is an id of that page;
* no explorer shows as ``VBox(children=...)`` text: each one is its stored static picture.

Runs where the browser test runs: Chromium present, ``playwright`` and ``jupyter_book`` importable, and
``SRLIB_BROWSER_TEST=1`` or ``CI`` set (``.ci/run`` sets both up).
"""

from __future__ import annotations

import contextlib
import functools
import html as html_lib
import http.server
import importlib.util
import json
import os
import re
import threading
from pathlib import Path
from urllib.parse import unquote, urldefrag, urlparse

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("SRLIB_CHROMIUM", "/usr/bin/chromium")
ENABLED = os.environ.get("SRLIB_BROWSER_TEST") == "1" or bool(os.environ.get("CI"))
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
]

pytest.importorskip("myst_parser", reason="the site extra: pip install -r requirements.txt (jupyter-book)")


def _load_build():
    spec = importlib.util.spec_from_file_location("srlib_site_build", ROOT / "docs" / "site" / "build.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


site = _load_build()


# ------------------------------------------------------------------------------------------------------------
# the build script, without Sphinx
# ------------------------------------------------------------------------------------------------------------
def _notebook(path: Path, markdown: list[str]) -> Path:
    nb = {"nbformat": 4, "nbformat_minor": 5, "metadata": {"widgets": {"state": {}}},
          "cells": [{"cell_type": "markdown", "id": f"m{i}", "metadata": {}, "source": src}
                    for i, src in enumerate(markdown)]}
    path.write_text(json.dumps(nb))
    return path


def test_sections_core_and_deep_dive_from_the_headings(tmp_path):
    nb = _notebook(tmp_path / "07_x.ipynb", [
        "# 07 · A title\n\n## 1. Context\ntext\n### 1.1 Data",
        "## 2. Step by step\n### 2.1 Check against `srlib` *(deep dive)*\n#### too deep\n```\n# not a heading\n```",
        "### 2.2 Again *(deep dive)*\n## 3. Exercises\n### 1.1 Data",
    ])
    info = site.notebook_sections(nb)
    assert info["title"] == "07 · A title"
    got = [(s["level"], s["text"], s["deep"], s["slug"]) for s in info["sections"]]
    assert got == [
        (2, "1. Context", False, "1-context"),
        (3, "1.1 Data", False, "11-data"),
        (2, "2. Step by step", False, "2-step-by-step"),
        (3, "2.1 Check against `srlib`", True, "21-check-against-srlib-deep-dive"),
        (3, "2.2 Again", True, "22-again-deep-dive"),
        (2, "3. Exercises", False, "3-exercises"),
        (3, "1.1 Data", False, "11-data-1"),  # MyST makes a repeated slug unique
    ]
    with pytest.raises(site.SiteError, match="no title"):
        site.notebook_sections(_notebook(tmp_path / "08_y.ipynb", ["## only a section"]))


def test_notebook_is_found_by_its_toc_name(tmp_path):
    new = _notebook(tmp_path / "00b_non_local_attention.ipynb", ["# 00b"])
    assert site.find_notebook("00b_non_local_attention", tmp_path) == new
    with pytest.raises(site.SiteError, match="no notebook"):
        site.find_notebook("09_missing", tmp_path)
    copy = tmp_path / "out" / "a.ipynb"
    site.copy_notebook(new, copy)
    assert "widgets" not in json.loads(copy.read_text())["metadata"]  # no widget JavaScript on the site


@pytest.mark.slow  # copies the 16 notebooks twice
def test_assembled_book_has_every_notebook_and_a_full_syllabus(tmp_path):
    from srlib.course.exercises import list_exercises

    files = site.assemble(tmp_path / "with", with_solutions=True)
    notebooks = [f for f in files if f.startswith("notebooks/")]
    assert notebooks == ["notebooks/00a_super_resolution", "notebooks/00b_non_local_attention", "notebooks/01_nlsn",
                         "notebooks/02_enlcn", "notebooks/03_dlsn", "notebooks/04_hspan", "notebooks/05_lcoan",
                         "notebooks/06_comparison"]
    assert len([f for f in files if f.startswith("solutions/")]) == 8
    for f in files:
        assert (tmp_path / "with" / f"{f}.ipynb").exists() or (tmp_path / "with" / f"{f}.md").exists(), f
    syllabus = (tmp_path / "with" / "syllabus.md").read_text()
    plan = site.yaml.safe_load((site.SITE / "syllabus.yml").read_text())
    for entry in plan["notebooks"]:
        assert 3 <= len(entry["objectives"]) <= 5, entry["notebook"]
        assert entry["time"]["read"] > 0 and entry["time"]["run"] > 0
        assert f"](notebooks/{entry['notebook']}.ipynb#" in syllabus  # its sections, linked
        assert f"](solutions/{entry['notebook']}_solutions.ipynb)" in syllabus
    assert syllabus.count("**After this notebook, a student can:**") == 8
    assert syllabus.count("**Core sections:") == 8 and syllabus.count("**Deep-dive sections:") == 8
    for ex in list_exercises():
        assert f"| {ex.key} " in syllabus, ex.key

    files = site.assemble(tmp_path / "without", with_solutions=False)
    assert not [f for f in files if f.startswith("solutions/")]
    assert not (tmp_path / "without" / "solutions").exists()
    assert "solutions.ipynb" not in (tmp_path / "without" / "syllabus.md").read_text()
    assert "Solutions" not in (tmp_path / "without" / "_toc.yml").read_text()


# ------------------------------------------------------------------------------------------------------------
# the built site in a browser
# ------------------------------------------------------------------------------------------------------------
class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # no request log on stderr
        pass


@contextlib.contextmanager
def _serve(folder: Path):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _explorer_outputs(nb_path: Path) -> tuple[int, list[int]]:
    """Explorers a stored notebook displays, and the cells (indices) whose explorer output has no static picture."""
    cells = json.loads(nb_path.read_text())["cells"]
    count, missing = 0, []
    for i, c in enumerate(cells):
        if c["cell_type"] != "code" or "AttentionExplorer(" not in "".join(c["source"]):
            continue
        for o in c.get("outputs", []):
            if "application/vnd.jupyter.widget-view+json" in o.get("data", {}):
                count += 1
                if "image/png" not in o["data"]:
                    missing.append(i)
    return count, missing


_PAGE_CHECKS = """async () => {
    if (window.MathJax && MathJax.startup && MathJax.startup.promise) { await MathJax.startup.promise; }
    const maths = [...document.querySelectorAll('.math')];
    const untypeset = maths.filter(m => !m.querySelector('mjx-container')).map(m => m.textContent.slice(0, 80));
    const errors = [...document.querySelectorAll('mjx-merror')].map(e => e.textContent.slice(0, 80));
    const prose = document.querySelector('main') || document.body;
    const clone = prose.cloneNode(true);
    clone.querySelectorAll('pre, code, script, style, mjx-container, .math').forEach(e => e.remove());
    const text = clone.textContent;
    const images = [...document.querySelectorAll('img')];
    const broken = images.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.getAttribute('src'));
    const links = [...document.querySelectorAll('a[href]')].map(a => a.href);
    const explorerImages = [...document.querySelectorAll('div.cell')]
        .filter(c => { const i = c.querySelector('.cell_input'); return i && i.textContent.includes('AttentionExplorer('); })
        .reduce((n, c) => n + c.querySelectorAll('.cell_output img').length, 0);
    return {maths: maths.length, mjx: document.querySelectorAll('mjx-container').length, untypeset, errors,
            rawDollars: (text.match(/\\$\\$/g) || []).length,
            rawDelims: (text.match(/\\\\[\\(\\[]/g) || []).length,
            images: images.length, broken, links, explorerImages,
            vbox: (document.body.innerText.match(/[VH]Box\\(children=/g) || []).length};
}"""


@pytest.mark.site
@pytest.mark.browser
@pytest.mark.skipif(not ENABLED, reason="site test: set SRLIB_BROWSER_TEST=1 (CI sets it)")
@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"no Chromium at {CHROMIUM} (apt-get install chromium)")
def test_site_builds_strict_and_every_page_renders(tmp_path):
    solutions = True
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (no browser download)")
    pytest.importorskip("jupyter_book", reason="pip install -r requirements.txt (jupyter-book)")

    html = site.build(tmp_path / "site", with_solutions=solutions, strict=True, quiet=True)
    toc = site.load_toc(solutions)
    pages = [f"{toc['root']}.html", *(f"{f}.html" for f in site.toc_files(toc))]
    for p in pages:
        assert (html / p).exists(), p

    expected_explorers: dict[str, tuple[int, list[int]]] = {}
    for f in site.toc_files(toc):
        if f.startswith("notebooks/"):
            expected_explorers[f"{f}.html"] = _explorer_outputs(html.parents[1] / "source" / f"{f}.ipynb")

    blocked: list[str] = []
    problems: list[str] = []
    targets: dict[str, set[str]] = {}  # page path -> fragments linked to it
    with _serve(html) as base, sync_api.sync_playwright() as pw:
        def route(r):
            host = urlparse(r.request.url).hostname
            if host == "127.0.0.1" or r.request.url.startswith(("data:", "blob:")):
                r.continue_()
            else:
                blocked.append(r.request.url)
                r.abort()

        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            context.route("**/*", route)
            page = context.new_page()
            for p in pages:
                page.goto(f"{base}/{p}", wait_until="load", timeout=60_000)
                r = page.evaluate(_PAGE_CHECKS)
                if r["untypeset"] or r["errors"]:
                    problems.append(f"{p}: equations not typeset {r['untypeset'][:3]} / MathJax errors {r['errors'][:3]}")
                if r["rawDollars"] or r["rawDelims"]:
                    problems.append(f"{p}: raw math left in the text ($$: {r['rawDollars']}, \\( or \\[: {r['rawDelims']})")
                if r["broken"]:
                    problems.append(f"{p}: images that did not load: {r['broken'][:5]}")
                if r["vbox"]:
                    problems.append(f"{p}: a widget shows as its text (VBox(children=...)), not as a picture")
                if p.startswith("notebooks/"):
                    if r["maths"] == 0 or r["mjx"] < r["maths"]:
                        problems.append(f"{p}: {r['maths']} equations, {r['mjx']} typeset")
                    count, missing = expected_explorers[p]
                    if missing:
                        problems.append(f"{p}: explorer output(s) of cell(s) {missing} stored without a static "
                                        "picture: re-execute the notebook")
                    elif r["explorerImages"] < count:
                        problems.append(f"{p}: {count} explorers, {r['explorerImages']} pictures shown")
                for link in r["links"]:
                    url, frag = urldefrag(link)
                    if urlparse(url).hostname != "127.0.0.1":
                        continue  # an external link: not part of this check
                    path = urlparse(url).path.lstrip("/") or "index.html"
                    if path.endswith("/"):
                        path += "index.html"
                    targets.setdefault(path, set())
                    if frag:
                        targets[path].add(unquote(frag))
        finally:
            browser.close()

    for path, frags in sorted(targets.items()):
        file = html / path
        if not file.is_file():
            problems.append(f"broken internal link: {path} does not exist")
            continue
        if frags and file.suffix == ".html":
            ids = {html_lib.unescape(m) for m in re.findall(r'\bid="([^"]+)"', file.read_text(encoding="utf-8"))}
            for frag in sorted(frags - ids):
                problems.append(f"broken internal link: {path}#{frag} (no such id)")
    assert not problems, "\n".join(problems)
    assert not blocked, f"the site asked the network for: {sorted(set(blocked))[:10]}"
    assert any(f.startswith("notebooks/") for f in targets)  # the check above saw the links
