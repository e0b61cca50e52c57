"""The package reads top-down: which srlib module may import which (issue 17, item 1).

Every module of ``srlib`` is parsed (``ast``, nothing is imported) and every import statement is collected,
also the lazy ones inside functions. From them:

* the mechanisms (``srlib/attention``) and networks (``srlib/models``) import nothing of ``srlib.reference``,
  ``srlib.viz``, ``srlib.analysis`` or matplotlib;
* ``srlib.analysis`` (the numbers about attention) imports neither ``srlib.viz`` nor matplotlib;
* only ``srlib.viz`` and ``srlib.course`` import matplotlib: ``srlib/viz`` draws the library's pictures,
  ``srlib/course`` the notebooks' own figures (``srlib/course/<notebook>/figures.py``); the measuring modules
  of the course (``srlib/course/<notebook>/study.py``) do not draw;
* ``srlib.course`` (recipe, tables, spread, the per-notebook study and figures, the exercises) is the top
  layer: nothing else in srlib imports it;
* a lower layer never imports a higher one (:data:`LAYERS`);
* the module graph has no cycle;
* nothing speaks HTTP by hand (``urllib.request``, ``http.client``, raw sockets): downloads go through pooch.

The helpers are tested on hand-made sources first, so that a checker that sees nothing cannot pass.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRLIB = Path(__file__).resolve().parents[1] / "srlib"

#: Layers, lowest first: a module may import its own layer and the layers below it, never one above.
#: ``srlib.reference`` (the official-code cases) and the ``srlib`` package itself are left out of the order.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("srlib.config", "srlib.checkpoint", "srlib._checks"),
    ("srlib.data", "srlib.metrics"),
    ("srlib.attention",),
    ("srlib.models",),
    ("srlib.pretrained", "srlib.inference", "srlib.train", "srlib.analysis",
     "srlib.sr", "srlib.evaluate"),  # the command lines srlib-sr / srlib-evaluate
    ("srlib.viz",),
    # The top layer: the notebooks' helpers (recipe, tables, spread), each notebook's study and figures
    # (srlib.course.dlsn, srlib.course.lcoan) and the self-checking exercises (srlib.course.exercises).
    ("srlib.course",),
)


def module_name(path: Path, root: Path) -> str:
    """``root/srlib/data/io.py`` -> ``"srlib.data.io"``; a package's ``__init__.py`` -> the package."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports_of(source: str, name: str, is_package: bool, known: set[str] = frozenset()) -> set[str]:
    """Absolute names of every module ``source`` imports, at any depth (lazy imports in functions too).

    ``from a.b import c`` gives ``a.b``, and also ``a.b.c`` when that is a module in ``known``; relative
    imports are resolved against ``name`` (a module, or a package when ``is_package``).
    """
    package = name if is_package else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{a.name}" for a in node.names if f"{module}.{a.name}" in known)
    return found


def srlib_graph(root: Path = SRLIB.parent) -> dict[str, set[str]]:
    """Module -> every module it imports (srlib and third-party), for every ``.py`` file under ``root/srlib``."""
    files = sorted((root / "srlib").rglob("*.py"))
    names = {module_name(p, root): p for p in files}
    known = set(names)
    return {n: imports_of(p.read_text(encoding="utf-8"), n, p.name == "__init__.py", known) for n, p in names.items()}


def within(module: str, prefix: str) -> bool:
    """``module`` is ``prefix`` or one of its submodules."""
    return module == prefix or module.startswith(prefix + ".")


def layer_of(module: str) -> int | None:
    for rank, members in enumerate(LAYERS):
        if any(within(module, m) for m in members):
            return rank
    return None


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle among the graph's own nodes (as ``[a, b, ..., a]``), or ``None``; edges to other names are ignored."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        path.append(n)
        for m in sorted(graph[n]):
            if m not in graph or m == n:
                continue
            if state.get(m) == 1:
                return path[path.index(m):] + [m]
            if m not in state:
                found = visit(m)
                if found:
                    return found
        path.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state:
            found = visit(n)
            if found:
                return found
    return None


def violations(graph: dict[str, set[str]]) -> list[str]:
    """Every broken rule of the module docstring, one sentence each (empty: the layout is clean)."""
    out = []
    for mod, imported in sorted(graph.items()):
        for imp in sorted(imported):
            mpl = within(imp, "matplotlib")
            if (within(mod, "srlib.attention") or within(mod, "srlib.models")) and (
                mpl or any(within(imp, p) for p in ("srlib.reference", "srlib.viz", "srlib.analysis"))
            ):
                out.append(f"{mod} (a mechanism / network) imports {imp}")
            elif mpl and not (within(mod, "srlib.viz") or within(mod, "srlib.course")):
                out.append(f"{mod} imports {imp}, but only srlib.viz and srlib.course may draw")
            elif mpl and within(mod, "srlib.course") and mod.endswith(".study"):
                out.append(f"{mod} imports {imp}, but a study module only measures (its figures module draws)")
            elif imp.startswith("srlib.") and imp in graph:
                lo, hi = layer_of(mod), layer_of(imp)
                if lo is not None and hi is not None and hi > lo:
                    out.append(f"{mod} (layer {lo}) imports {imp} from a higher layer ({hi})")
    cycle = find_cycle(graph)
    if cycle:
        out.append("import cycle: " + " -> ".join(cycle))
    return out


# ---------------------------------------------------------------------------------------- the checker itself
def test_imports_of_sees_lazy_relative_and_submodule_imports():
    src = (
        "import os\nfrom . import io\nfrom .datasets import X\nfrom ..metrics import psnr\n"
        "def f():\n    import matplotlib.pyplot as plt\n    from srlib.viz import maps\n"
    )
    got = imports_of(src, "srlib.data.samples", False, known={"srlib.viz.maps", "srlib.data.io"})
    assert got == {"os", "srlib.data", "srlib.data.io", "srlib.data.datasets", "srlib.metrics",
                   "matplotlib.pyplot", "srlib.viz", "srlib.viz.maps"}
    # in a package's __init__, "." is the package itself
    assert imports_of("from .explorer import A", "srlib.viz", True) == {"srlib.viz.explorer"}


def test_find_cycle_finds_a_cycle_and_only_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c", "os"}, "c": set()}) is None
    cycle = find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}})
    assert cycle is not None and cycle[0] == cycle[-1] and set(cycle) == {"a", "b", "c"}


def test_violations_name_each_broken_rule():
    graph = {
        "srlib.attention.nla": {"srlib.reference", "torch"},
        "srlib.models.nlsn": {"matplotlib.pyplot"},
        "srlib.analysis.overlap": {"matplotlib", "srlib.viz.maps"},
        "srlib.viz.maps": {"matplotlib.pyplot", "srlib.analysis.overlap"},
        "srlib.reference": set(),
        "srlib.data.io": {"srlib.data.samples"},
        "srlib.data.samples": {"srlib.data.io"},
        "srlib.course.lcoan.figures": {"matplotlib.pyplot", "srlib.viz.buckets"},
        "srlib.course.lcoan.study": {"matplotlib"},
    }
    got = violations(graph)
    assert "srlib.attention.nla (a mechanism / network) imports srlib.reference" in got
    assert "srlib.models.nlsn (a mechanism / network) imports matplotlib.pyplot" in got
    assert "srlib.analysis.overlap imports matplotlib, but only srlib.viz and srlib.course may draw" in got
    assert ("srlib.course.lcoan.study imports matplotlib, but a study module only measures "
            "(its figures module draws)") in got
    assert "srlib.analysis.overlap (layer 4) imports srlib.viz.maps from a higher layer (5)" in got
    assert any(v.startswith("import cycle: ") for v in got)
    assert len(got) == 6


def test_graph_covers_every_module():
    graph = srlib_graph()
    assert {"srlib", "srlib.attention.nla", "srlib.analysis.flops", "srlib.viz.explorer", "srlib.train",
            "srlib.course.recipe", "srlib.course.dlsn.figures", "srlib.course.exercises.nb01"} <= set(graph)
    assert "srlib.attention.softthreshold" in graph["srlib.attention.hspa"]
    assert all(layer_of(m) is not None for m in graph if m != "srlib" and not within(m, "srlib.reference"))


# ------------------------------------------------------------------------------------------------ the rules
@pytest.mark.parametrize("layer", ["srlib.attention", "srlib.models"])
def test_mechanisms_and_networks_do_not_draw_or_analyse(layer):
    bad = [v for v in violations(srlib_graph()) if v.startswith(layer + ".") and "a mechanism / network" in v
           and not v.endswith("imports srlib.reference")]
    assert bad == []


@pytest.mark.parametrize("layer", ["srlib.attention", "srlib.models"])
def test_mechanisms_and_networks_do_not_import_the_reference_cases(layer):
    # The official-code case runners live with srlib.reference, which imports the mechanisms, not the reverse.
    bad = [v for v in violations(srlib_graph()) if v.startswith(layer + ".") and v.endswith("imports srlib.reference")]
    assert bad == []


def test_only_viz_and_course_import_matplotlib():
    bad = [v for v in violations(srlib_graph()) if "may draw" in v or "only measures" in v]
    assert bad == []


def test_no_import_from_a_lower_layer_to_a_higher_one():
    bad = [v for v in violations(srlib_graph()) if "from a higher layer" in v]
    assert bad == []


def test_no_hand_written_http():
    hand = ("urllib.request", "http.client", "socket", "ftplib")
    bad = sorted(f"{m} imports {i}" for m, imps in srlib_graph().items() for i in imps if i in hand)
    assert bad == []
    assert "pooch" in srlib_graph()["srlib.data.fetching"]  # downloads go through pooch (srlib.data.fetching)


def test_no_import_cycle():
    graph = srlib_graph()
    assert find_cycle(graph) is None
