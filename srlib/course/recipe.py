"""The one tiny-training recipe of the course notebooks, and the shipped networks as the tables evaluate them.

Every paper notebook trains a tiny network on CPU (to show the loop) and then compares it with bicubic, the
shipped small networks of :mod:`srlib.pretrained` and the same-budget EDSR (:mod:`srlib.course.tables`).
Keeping the recipe here means the notebooks cannot drift apart: change :data:`TINY_RECIPE` and every notebook
follows.
"""

from __future__ import annotations

import tempfile
from typing import Any, Callable

import torch
from torch import nn

__all__ = ["TINY_RECIPE", "tiny_config", "tiny_train", "shipped", "Entry", "DENSE_TILE", "DENSE_OVERLAP"]

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
