"""End-to-end: the attention explorer in a real JupyterLab, driven in headless Chromium by Playwright.

Starts JupyterLab on 127.0.0.1 (a random token from ``secrets.token_hex``, Jupyter/IPython state in a temporary
folder), opens a small notebook that builds an :class:`srlib.viz.explorer.AttentionExplorer`, runs all cells,
and checks that

* the widget rendered (no "Loading widget...", no "Error displaying widget", no traceback);
* moving the query slider with the keyboard (ArrowRight on the slider handle) changes the numbers the widget
  prints and the attention-map picture (pixels of the map panel differ);
* switching the mechanism to NLSA shows its bucket, and each of the six mechanisms draws its own map without
  error;
* with ipyevents installed, a click on the picture moves the query.

Then every project notebook (``notebooks/NN_*.ipynb``, a copy without outputs) is run whole in the same
JupyterLab: no cell raises, every explorer it displays renders, and the first one redraws when its query
slider moves (one screenshot per notebook).

Screenshots go to ``artifacts/browser/`` (git-ignored; ``SRLIB_ARTIFACTS`` overrides the folder).

Runs only where it can and should: Chromium present (``/usr/bin/chromium`` from Debian's ``chromium`` package,
or ``SRLIB_CHROMIUM``), the Python ``playwright`` package importable (it never downloads a browser here), and
``SRLIB_BROWSER_TEST=1`` or ``CI`` set. Every request that is not to 127.0.0.1 is blocked.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import NamedTuple
from urllib.parse import urlparse

import pytest

CHROMIUM = os.environ.get("SRLIB_CHROMIUM", "/usr/bin/chromium")
ENABLED = os.environ.get("SRLIB_BROWSER_TEST") == "1" or bool(os.environ.get("CI"))
ARTIFACTS = Path(os.environ.get("SRLIB_ARTIFACTS", Path(__file__).resolve().parents[1] / "artifacts")) / "browser"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not ENABLED, reason="browser test: set SRLIB_BROWSER_TEST=1 (CI sets it)"),
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"no Chromium at {CHROMIUM} (apt-get install chromium)"),
]

CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
]

#: The notebook the browser runs: a 48 x 48 crop of a bundled photograph (no data download needed).
CELLS = [
    "import torch\ntorch.set_num_threads(1)\n"
    "from srlib.data import imresize, load_sample\n"
    "from srlib.viz.explorer import AttentionExplorer",
    "image = imresize(load_sample('chelsea')[:, :256, 100:356], output_size=(48, 48)).clamp(0, 1)\n"
    "explorer = AttentionExplorer(image, mechanisms=('NLA', 'NLSA', 'ENLA', 'GLA', 'HSPA', 'LCoA'), query=(24, 16))\n"
    "explorer",
    "explorer.state()['keys_for_90']",
]


#: The project's notebooks: each is run in the browser and its explorers are checked (issue: the explorer
#: works in every notebook in JupyterLab).
REAL_NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("[0-9][0-9]*_*.ipynb"))


def _write_stripped_copy(src: Path, dst: Path) -> None:
    nb = json.loads(src.read_text())
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            cell["outputs"], cell["execution_count"] = [], None
    nb["metadata"].pop("widgets", None)
    dst.write_text(json.dumps(nb, indent=1))


def _explorer_count(nb: Path) -> int:
    """Explorer widgets the executed notebook displayed (cells building an AttentionExplorer with a widget view)."""
    cells = json.loads(nb.read_text())["cells"]
    return sum(1 for c in cells if c["cell_type"] == "code" and "AttentionExplorer(" in "".join(c["source"])
               and any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in c.get("outputs", [])))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _write_notebook(path: Path) -> None:
    nb = {
        "nbformat": 4, "nbformat_minor": 5,
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
                     "language_info": {"name": "python"}},
        "cells": [{"cell_type": "code", "id": f"cell{i}", "metadata": {}, "execution_count": None, "outputs": [],
                   "source": src} for i, src in enumerate(CELLS)],
    }
    path.write_text(json.dumps(nb, indent=1))


class _Lab(NamedTuple):
    """A running JupyterLab: base URL and its (random) token."""

    url: str
    token: str

    def page(self, path: str) -> str:
        """The URL of ``path`` (from ``/lab``) carrying the token (the server then sets its login cookie)."""
        return f"{self.url}{path}?token={self.token}"


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """JupyterLab on 127.0.0.1 serving a temporary folder with the demo notebook; yields its base URL."""
    tmp = tmp_path_factory.mktemp("lab")
    root = tmp / "root"
    root.mkdir()
    _write_notebook(root / "explorer_demo.ipynb")
    for nb in REAL_NOTEBOOKS:  # copies without outputs: the browser runs them from scratch
        _write_stripped_copy(nb, root / nb.name)
    config = tmp / "config"
    (config / "labconfig").mkdir(parents=True)
    # no "news" pop-up over the notebook
    (config / "labconfig" / "page_config.json").write_text(
        json.dumps({"disabledExtensions": {"@jupyterlab/apputils-extension:announcements": True}}))
    # every cell attached to the page (no virtual scrolling), so that all widgets render and can be read
    tracker = tmp / "settings" / "@jupyterlab" / "notebook-extension" / "tracker.jupyterlab-settings"
    tracker.parent.mkdir(parents=True)
    tracker.write_text(json.dumps({"windowingMode": "none"}))
    env = dict(os.environ)
    env.update(JUPYTER_CONFIG_DIR=str(config), JUPYTER_DATA_DIR=str(tmp / "data"),
               JUPYTER_RUNTIME_DIR=str(tmp / "runtime"), IPYTHONDIR=str(tmp / "ipython"),
               JUPYTERLAB_WORKSPACES_DIR=str(tmp / "workspaces"), JUPYTERLAB_SETTINGS_DIR=str(tmp / "settings"),
               OMP_NUM_THREADS="1")
    env.pop("MPLBACKEND", None)
    port = _free_port()
    token = secrets.token_hex(24)  # a random token: another local user cannot drive this server
    cmd = [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--allow-root", f"--port={port}",
           "--ip=127.0.0.1", "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
           "--ServerApp.password=",
           f"--ServerApp.root_dir={root}", "--LabApp.expose_app_in_browser=True",
           "--LabApp.extension_manager=readonly", "--LabApp.news_url=None"]
    log = open(tmp / "jupyterlab.log", "wb")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"jupyter lab exited ({proc.returncode}): {(tmp / 'jupyterlab.log').read_text()}")
            try:
                req = urllib.request.Request(f"{url}/api/status", headers={"Authorization": f"token {token}"})
                with urllib.request.urlopen(req, timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("jupyter lab did not answer within 60 s")
            time.sleep(0.3)
        yield _Lab(url, token)
    finally:
        # the server and the kernels it started form one process group (created above): stop exactly that group
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=3)
            except subprocess.TimeoutExpired:
                pass
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # kernels that outlived the server, if any
        proc.wait()
        log.close()


def _only_localhost(route) -> None:
    host = urlparse(route.request.url).hostname
    if host in ("127.0.0.1", None) or route.request.url.startswith(("data:", "blob:")):
        route.continue_()
    else:
        route.abort()


def _map_pixels(png: bytes):
    import numpy as np
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)


@contextlib.contextmanager
def _notebook_page(sync_api, url: str, failed: list[str] | None = None):
    """Headless Chromium on a JupyterLab notebook URL (only 127.0.0.1 reachable), once its kernel session exists.

    ``failed`` collects the URLs of failed or blocked requests. The browser is closed on exit.
    """
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 1100})
            context.route("**/*", _only_localhost)
            page = context.new_page()
            if failed is not None:
                page.on("requestfailed", lambda req: failed.append(req.url))
            page.goto(url, wait_until="domcontentloaded", timeout=60_000)
            page.wait_for_function(
                "() => window.jupyterapp && window.jupyterapp.shell.currentWidget"
                " && window.jupyterapp.shell.currentWidget.sessionContext"
                " && window.jupyterapp.shell.currentWidget.sessionContext.session", timeout=60_000)
            yield page
        finally:
            browser.close()


def test_lab_refuses_requests_without_its_random_token(lab):
    """The server is not open to every local user: no token -> 403, the right token -> 200 (issue 22)."""
    assert len(lab.token) == 48 and int(lab.token, 16) >= 0
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(f"{lab.url}/api/contents", timeout=10)
    assert err.value.code == 403
    req = urllib.request.Request(f"{lab.url}/api/contents", headers={"Authorization": f"token {lab.token}"})
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.status == 200


def test_explorer_in_jupyterlab(lab):
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (no browser download)")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    failed: list[str] = []
    marks: list[tuple[str, float]] = [("start", time.monotonic())]
    with _notebook_page(sync_api, lab.page("/lab/tree/explorer_demo.ipynb"), failed) as page:
        marks.append(("lab loaded", time.monotonic()))
        page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")

        stats = page.locator(".srlib-explorer-stats")
        stats.wait_for(state="visible", timeout=60_000)
        page.wait_for_function(
            "() => { const s = document.querySelector('.srlib-explorer-stats');"
            " const i = document.querySelector('.srlib-explorer-image img, img.srlib-explorer-image');"
            " return s && /keys carrying/.test(s.innerText) && i && i.naturalWidth > 0; }", timeout=60_000)
        marks.append(("widget rendered", time.monotonic()))
        page.wait_for_timeout(300)
        notebook_text = page.locator(".jp-Notebook").inner_text()
        page.screenshot(path=str(ARTIFACTS / "explorer_page_before.png"), full_page=True)
        assert "Loading widget" not in notebook_text
        assert "Error displaying widget" not in notebook_text and "Traceback" not in notebook_text
        before = stats.inner_text()
        assert "query (y=24, x=16)" in before, before
        k90_before = int(page.locator(".srlib-explorer-stats .srlib-k90").inner_text())
        picture = page.locator(".srlib-explorer-image").first
        png_before = picture.screenshot(path=str(ARTIFACTS / "explorer_map_before.png"))

        # move the query: keyboard on the x slider handle (noUiSlider), 6 steps to the right
        src_before = picture.evaluate("(el) => (el.tagName === 'IMG' ? el : el.querySelector('img')).src")
        handle = page.locator(".srlib-explorer-x .noUi-handle").first
        handle.focus()
        for _ in range(6):
            page.keyboard.press("ArrowRight")
        page.wait_for_function(
            "() => /query \\(y=24, x=22\\)/.test(document.querySelector('.srlib-explorer-stats').innerText)",
            timeout=30_000)
        page.wait_for_function(
            "(old) => { const e = document.querySelector('.srlib-explorer-image');"
            " const i = e.tagName === 'IMG' ? e : e.querySelector('img'); return i.src !== old && i.complete; }",
            arg=src_before, timeout=30_000)
        marks.append(("map redrawn after ArrowRight", time.monotonic()))
        page.wait_for_timeout(300)
        after = stats.inner_text()
        k90_after = int(page.locator(".srlib-explorer-stats .srlib-k90").inner_text())
        png_after = picture.screenshot(path=str(ARTIFACTS / "explorer_map_after.png"))
        page.screenshot(path=str(ARTIFACTS / "explorer_page_after.png"), full_page=True)
        assert after != before

        a, b = _map_pixels(png_before), _map_pixels(png_after)
        assert a.shape == b.shape
        right = a.shape[1] // 2  # the attention-map panel is the right half of the picture
        changed = (abs(a[:, right:] - b[:, right:]).sum(-1) > 30).mean()
        assert changed > 0.01, f"only {changed:.4f} of the map panel changed"

        # switch to NLSA: its bucket appears in the numbers
        page.locator(".srlib-explorer-mechanism select").select_option("NLSA")
        page.wait_for_function(
            "() => /NLSA/.test(document.querySelector('.srlib-explorer-stats').innerText)"
            " && /bucket size/.test(document.querySelector('.srlib-explorer-stats').innerText)",
            timeout=30_000)
        page.wait_for_timeout(500)
        maps = {"NLA": _map_pixels(png_after)}
        maps["NLSA"] = _map_pixels(picture.screenshot(path=str(ARTIFACTS / "explorer_map_nlsa.png")))

        # every other mechanism: computed in the running kernel and drawn, no error
        for mech in ("ENLA", "GLA", "HSPA", "LCoA"):
            old_src = picture.evaluate("(el) => (el.tagName === 'IMG' ? el : el.querySelector('img')).src")
            page.locator(".srlib-explorer-mechanism select").select_option(mech)
            page.wait_for_function(
                "([m, old]) => { const s = document.querySelector('.srlib-explorer-stats').innerText;"
                " const e = document.querySelector('.srlib-explorer-image');"
                " const i = e.tagName === 'IMG' ? e : e.querySelector('img');"
                " return (s.includes(m) || /cannot compute/.test(s)) && i.src !== old && i.complete; }",
                arg=[mech, old_src], timeout=60_000)
            page.wait_for_timeout(300)
            text = stats.inner_text()
            assert "cannot compute" not in text and "keys carrying" in text, (mech, text)
            maps[mech] = _map_pixels(picture.screenshot(path=str(ARTIFACTS / f"explorer_map_{mech.lower()}.png")))
            marks.append((f"{mech} drawn", time.monotonic()))
        for mech, px in maps.items():  # each mechanism draws its own map for the same query
            if mech != "NLA":
                assert px.shape == maps["NLA"].shape
                diff = (abs(px[:, right:] - maps["NLA"][:, right:]).sum(-1) > 30).mean()
                assert diff > 0.005, f"{mech}'s map panel looks like NLA's ({diff:.4f} of pixels differ)"

        # click on the map panel (ipyevents): the query moves to the clicked pixel
        clicked = None
        if _has_ipyevents():
            box = picture.bounding_box()
            page.mouse.click(box["x"] + box["width"] * 0.75, box["y"] + box["height"] * 0.3)
            page.wait_for_function(
                "() => !/query \\(y=24, x=22\\)/.test(document.querySelector('.srlib-explorer-stats').innerText)",
                timeout=30_000)
            clicked = stats.inner_text()
            marks.append(("query moved by click", time.monotonic()))
            page.screenshot(path=str(ARTIFACTS / "explorer_page_clicked.png"), full_page=True)
        (ARTIFACTS / "explorer_readout.txt").write_text(
            f"before:\n{before}\n\nafter ArrowRight x6:\n{after}\n\nafter click:\n{clicked}\n\n"
            "seconds since the browser started: "
            + ", ".join(f"{name} {t - marks[0][1]:.1f}" for name, t in marks[1:]) + "\n\n"
            "failed or blocked requests:\n" + "\n".join(failed) + "\n")
    assert k90_before > 0 and k90_after > 0
    assert clicked is None or re.search(r"query \(y=\d+, x=\d+\)", clicked)


def _has_ipyevents() -> bool:
    try:
        import ipyevents  # noqa: F401
    except ImportError:
        return False
    return True


_ALL_EXECUTED = """() => {
    const nb = window.jupyterapp.shell.currentWidget;
    if (!nb || !nb.sessionContext.session || !nb.sessionContext.session.kernel) return false;
    if (nb.sessionContext.session.kernel.status !== 'idle') return false;
    const cells = nb.content.widgets.filter(c => c.model.type === 'code');
    return cells.every(c => c.model.executionCount !== null && !c.hasClass('jp-mod-pending'));
}"""

_ERRORS = """() => window.jupyterapp.shell.currentWidget.content.widgets
    .filter(c => c.model.type === 'code')
    .flatMap(c => c.model.outputs.toJSON().filter(o => o.output_type === 'error').map(o => o.ename + ': ' + o.evalue))"""


@pytest.mark.parametrize("nb", REAL_NOTEBOOKS, ids=lambda p: p.stem)
def test_explorers_of_each_notebook_in_jupyterlab(lab, nb):
    """Run the whole notebook in JupyterLab; every explorer renders, and the first one answers its x slider."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (no browser download)")
    expected = _explorer_count(nb)
    assert expected >= 1, f"{nb.name} displays no explorer"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    # a workspace of its own: otherwise JupyterLab restores the tabs of the previous test's workspace
    with _notebook_page(sync_api, lab.page(f"/lab/workspaces/{nb.stem}/tree/{nb.name}")) as page:
        page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
        page.wait_for_timeout(2000)
        page.wait_for_function(_ALL_EXECUTED, timeout=900_000, polling=1000)
        assert page.evaluate(_ERRORS) == [], f"{nb.name}: cells raised in the browser"
        explorers = page.locator(".srlib-explorer")
        page.wait_for_function(
            "(n) => { const s = document.querySelectorAll('.srlib-explorer .srlib-explorer-stats');"
            " return s.length === n && [...s].every(e => /keys carrying/.test(e.innerText)); }",
            arg=expected, timeout=60_000)
        text = page.locator(".jp-Notebook").inner_text()
        assert "Loading widget" not in text and "Error displaying widget" not in text
        assert explorers.count() == expected

        first = explorers.first
        first.scroll_into_view_if_needed()
        stats = first.locator(".srlib-explorer-stats")
        before = stats.inner_text()
        png_before = first.locator(".srlib-explorer-image").first.screenshot()
        first.locator(".srlib-explorer-x .noUi-handle").first.focus()
        for _ in range(3):
            page.keyboard.press("ArrowRight")
        page.wait_for_function("([el, old]) => el.innerText !== old && /keys carrying/.test(el.innerText)",
                               arg=[stats.element_handle(), before], timeout=60_000)
        page.wait_for_timeout(800)
        png_after = first.locator(".srlib-explorer-image").first.screenshot()
        first.screenshot(path=str(ARTIFACTS / f"{nb.stem}_explorer_moved.png"))
        a, b = _map_pixels(png_before), _map_pixels(png_after)
        assert a.shape == b.shape and (abs(a - b).sum(-1) > 30).mean() > 0.002, f"{nb.name}: picture unchanged"
        page.evaluate("() => window.jupyterapp.shell.currentWidget.sessionContext.shutdown()")  # free its memory
