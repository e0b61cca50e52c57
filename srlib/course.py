"""Settings and tables shared by the course notebooks: one tiny-training recipe, one quality table.

Every paper notebook trains a tiny network on CPU (to show the loop) and then compares it with bicubic, the
shipped small networks of :mod:`srlib.pretrained` and the same-budget EDSR. Keeping the recipe and the table
here means the notebooks cannot drift apart: change :data:`TINY_RECIPE` and every notebook follows.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import nn

__all__ = ["TINY_RECIPE", "tiny_config", "tiny_train", "shipped", "quality_table", "format_quality_table",
           "data_setting", "summarise", "load_spread", "spread_band", "assert_in_spread"]

#: The one tiny-training recipe of the notebooks (CPU, about a minute per network): 200 Adam steps on
#: batches of 4 random 48x48 HR patches (24x24 LR at x2), learning rate 5e-4 (the papers use 1e-4 over 1M
#: steps; a larger rate makes something visible in 200), halved at step 150, L1 loss, seed 0, no validation
#: or checkpoints during the run, the loss logged every 10 steps.
TINY_RECIPE: dict[str, Any] = dict(
    iterations=200, batch_size=4, patch_size=48, lr=5e-4, milestones=(150,), log_every=10,
    val_every=0, ckpt_every=0, seed=0,
)


def tiny_config(**overrides: Any):
    """The :data:`TINY_RECIPE` as a :class:`srlib.train.TrainConfig`, with optional overrides.

    Raises:
        TypeError: an override that is not a ``TrainConfig`` field (the message names it).
        ValueError: what ``TrainConfig`` raises for an impossible value.
    """
    from srlib.train import TrainConfig

    fields = set(TrainConfig.__dataclass_fields__)
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise TypeError(f"tiny_config: unknown TrainConfig field(s) {unknown}; known: {sorted(fields)}")
    return TrainConfig(**{**TINY_RECIPE, **overrides})


def tiny_train(model: nn.Module, train_set: Any = None, *, scale: int = 2, extra_loss: Any = None,
               progress: bool = False, **overrides: Any) -> dict[str, Any]:
    """Train ``model`` with the tiny recipe on CPU in a throw-away run folder.

    Args:
        model: the network to train (in place).
        train_set: items ``{"lr", "hr"}``; ``None`` takes :func:`srlib.data.default_train_set` (the data
            root's training photos, else the bundled photographs) with 48x48 HR patches, crops seeded with 0.
        scale: SR factor of the default training set.
        extra_loss: passed to :func:`srlib.train.train`; ENLCN's contrastive term (Eqs. 8-10) is added only when
            given, e.g. ``extra_loss=model.make_extra_loss()`` (the CLI adds it for ENLCN by itself).
        progress: show a progress bar (off by default: a bar stored in a notebook's outputs is a frozen
            ``0%`` line in every other viewer; the notebooks print the logged losses instead).
        overrides: :class:`~srlib.train.TrainConfig` fields that differ from :data:`TINY_RECIPE`.

    Returns:
        ``train``'s result plus ``"losses"`` (the logged L1 losses) and ``"source"`` (where the photos came from).
    """
    from srlib import data as sdata
    from srlib.train import train

    cfg = tiny_config(**overrides)
    source = "given training set"
    if train_set is None:
        train_set, source = sdata.default_train_set(scale, cfg.patch_size,
                                                    generator=torch.Generator().manual_seed(cfg.seed))
    run_dir = tempfile.mkdtemp(prefix="srlib_tiny_")
    kwargs = {} if extra_loss is None else {"extra_loss": extra_loss}
    result = train(model, train_set, None, cfg, run_dir, resume=False, device="cpu", progress=progress, **kwargs)
    result["losses"] = [h["loss"] for h in result["history"]["train"]]
    result["source"] = source
    return result


Entry = nn.Module | Callable[[torch.Tensor], torch.Tensor]

#: LR tile and context (pixels) for networks whose attention holds an L x L matrix (HSPAN): the README's
#: results table was measured this way (attention within 48 x 48 LR windows).
DENSE_TILE, DENSE_OVERLAP = 32, 8


def shipped(name: str) -> Entry:
    """A shipped small network (:func:`srlib.pretrained`), ready for :func:`quality_table` as the README's
    results table evaluated it: whole images, except HSPAN, which runs on ``DENSE_TILE`` LR tiles with
    ``DENSE_OVERLAP`` pixels of context and starts its exact top-k search at 256 (same output, fewer retries).

    Args:
        name: e.g. ``"hspan-small-x2"`` (:func:`srlib.list_pretrained`).

    Returns:
        the network, or a callable LR ``(3, h, w)`` -> SR for HSPAN.

    Raises:
        KeyError / CheckpointError / FileNotFoundError: what :func:`srlib.pretrained` raises.
    """
    from srlib.inference import forward_chop
    from srlib.pretrained import pretrained

    net = pretrained(name)
    if not name.startswith("hspan"):
        return net
    net.set_topk(256)

    def tiled(lr: torch.Tensor) -> torch.Tensor:
        return forward_chop(net, lr, 2, tile=DENSE_TILE, overlap=DENSE_OVERLAP, tile_batch=1)

    tiled.network = net  # type: ignore[attr-defined]
    return tiled


def quality_table(entries: Mapping[str, Entry], dataset: Any, scale: int, *, bicubic: bool = True,
                  seed: int | None = 0) -> list[dict[str, Any]]:
    """PSNR / SSIM on Y of several super-resolvers on one data set, bicubic first.

    Args:
        entries: ``{"label": network or callable LR (3, h, w) -> SR (3, s*h, s*w)}``, RGB in ``[0, 1]``.
        dataset: items ``{"lr", "hr", "name"}`` (e.g. :func:`srlib.data.default_eval_set`).
        scale: SR factor (border crop).
        bicubic: put MATLAB-compatible bicubic first, as the baseline every trained network must beat.
        seed: re-seed the global generator before each entry (NLSA, GLA and ENLCA draw random projections in
            every forward call), so the table is the same on every run; ``None`` leaves it alone.

    Returns:
        one row per entry ``{"name", "psnr", "ssim", "gain_db"}`` (``gain_db``: PSNR above bicubic, ``None``
        without the bicubic row), in the order given.
    """
    from srlib import data as sdata
    from srlib.inference import evaluate

    items: list[tuple[str, Entry]] = []
    if bicubic:
        items.append(("bicubic", lambda lr: sdata.imresize(lr, scale)))
    items.extend(entries.items())
    rows: list[dict[str, Any]] = []
    for name, model in items:
        if seed is not None:
            torch.manual_seed(seed)
        r = evaluate(model, dataset, scale)
        rows.append({"name": name, "psnr": r["psnr"], "ssim": r["ssim"]})
    base = rows[0]["psnr"] if bicubic else None
    for row in rows:
        row["gain_db"] = None if base is None else row["psnr"] - base
    return rows


def format_quality_table(rows: Sequence[Mapping[str, Any]], title: str = "") -> str:
    """The rows of :func:`quality_table` as an aligned text table (PSNR in dB, two decimals; SSIM, four)."""
    width = max([len(str(r["name"])) for r in rows] + [len("network")])
    lines = [title] if title else []
    lines.append(f"{'network':<{width}}  {'PSNR (dB)':>9}  {'SSIM':>6}  {'vs bicubic':>10}")
    for r in rows:
        gain = "" if r.get("gain_db") is None else f"{r['gain_db']:+.2f} dB"
        ssim = "" if r.get("ssim") is None else f"{r['ssim']:.4f}"
        lines.append(f"{r['name']:<{width}}  {r['psnr']:9.2f}  {ssim:>6}  {gain:>10}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------------
# Measured spread of the tiny runs (what a notebook may assert about a result that depends on training noise)
# ----------------------------------------------------------------------------------------------------------
#
# A tiny run's numbers change with the seed, with the number of CPU threads (the order of floating-point
# reductions) and with the CPU's kernels, so a notebook never compares them as text (nbval ignore-output).
# Instead it asserts that its value lies inside the spread measured over several seeds and thread counts:
# ``benchmarks/tiny_spread.py NOTEBOOK`` runs the notebook's cases (``benchmarks/spread_cases/nbNN.py``) and
# writes ``srlib/spread/NOTEBOOK.json``; :func:`assert_in_spread` reads it.

SPREAD_DIR = Path(__file__).with_name("spread")


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
