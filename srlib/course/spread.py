"""Measured spread of the tiny runs: what a notebook may assert about a result that depends on training noise.

A tiny run's numbers change with the seed, with the number of CPU threads (the order of floating-point
reductions) and with the CPU's kernels, so a notebook never compares them as text (nbval ignore-output).
Instead it asserts that its value lies inside the spread measured over several seeds and thread counts:
``benchmarks/tiny_spread.py NOTEBOOK`` runs the notebook's cases (``benchmarks/spread_cases/nbNN.py``) and
writes ``srlib/spread/NOTEBOOK.json``; :func:`assert_in_spread` reads it. (The JSON files stay in
``srlib/spread/``: the notebooks' stored outputs name that folder.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

__all__ = ["SPREAD_DIR", "data_setting", "summarise", "load_spread", "spread_band", "assert_in_spread"]

#: Where the measured spreads live: ``srlib/spread/<notebook>.json``.
SPREAD_DIR = Path(__file__).resolve().parent.parent / "spread"


def data_setting() -> str:
    """``"data"`` when the benchmark data (Set5 and the training photographs) is in the data root, else
    ``"offline"`` (the notebooks then run on the bundled scikit-image photographs): the two settings have
    different tiny-run results and are measured separately."""
    from srlib.data import datasets

    folder = datasets.default_train_folder()
    has_set5 = (datasets._benchmark_root(None) / "Set5").is_dir()
    return "data" if (folder is not None and has_set5) else "offline"


def summarise(values: Sequence[float]) -> dict[str, Any]:
    """``{"values", "n", "mean", "std", "min", "max"}`` of measured values (``std``: sample standard deviation,
    0 for a single value)."""
    vals = [float(v) for v in values]
    if not vals:
        raise ValueError("summarise: no values")
    n = len(vals)
    mean = sum(vals) / n
    std = (sum((v - mean) ** 2 for v in vals) / (n - 1)) ** 0.5 if n > 1 else 0.0
    return {"values": vals, "n": n, "mean": mean, "std": std, "min": min(vals), "max": max(vals)}


def load_spread(notebook: str) -> dict[str, Any]:
    """The measured spreads of one notebook: ``{setting: {case: {metric: summary}}}`` (see :func:`summarise`).

    Raises:
        FileNotFoundError: no ``srlib/spread/<notebook>.json`` (run ``benchmarks/tiny_spread.py <notebook>``).
    """
    import json

    path = SPREAD_DIR / f"{notebook}.json"
    if not path.is_file():
        raise FileNotFoundError(f"no measured spread for notebook {notebook!r}: {path} is missing "
                                f"(make it with: python benchmarks/tiny_spread.py {notebook})")
    return json.loads(path.read_text())


def spread_band(notebook: str, case: str, metric: str, *, setting: str | None = None, k: float = 3.0,
                floor: float = 0.0) -> tuple[float, float]:
    """The interval a fresh run of ``case`` must fall in: ``mean ± max(k * std, max - min, floor)`` of the
    values measured over seeds and thread counts (in the metric's unit, e.g. dB).

    Raises:
        KeyError: no such setting / case / metric in the notebook's spread file (the message lists what is there).
    """
    setting = setting or data_setting()
    table = load_spread(notebook)
    try:
        s = table[setting][case][metric]
    except KeyError:
        have = {st: {c: sorted(m) for c, m in cases.items()} for st, cases in table.items()}
        raise KeyError(f"spread of notebook {notebook!r} has no {setting!r}/{case!r}/{metric!r}; it has {have}"
                       ) from None
    half = max(k * s["std"], s["max"] - s["min"], floor)
    return s["mean"] - half, s["mean"] + half


def assert_in_spread(notebook: str, case: str, metric: str, value: float, *, setting: str | None = None,
                     k: float = 3.0, floor: float = 0.0) -> tuple[float, float]:
    """Assert that a tiny-run result lies in its measured band (:func:`spread_band`); returns the band.

    Raises:
        AssertionError: the value is outside the band (the message gives value, band and the measured values).
    """
    lo, hi = spread_band(notebook, case, metric, setting=setting, k=k, floor=floor)
    if not (lo <= float(value) <= hi):
        s = load_spread(notebook)[setting or data_setting()][case][metric]
        raise AssertionError(f"{notebook}/{case}/{metric} = {float(value):.4f} is outside its measured band "
                             f"[{lo:.4f}, {hi:.4f}] (values over seeds x threads: "
                             f"{[round(v, 4) for v in s['values']]})")
    return lo, hi
