"""Data order and random state: a resumable infinite sampler, per-sample seeding, RNG state capture."""

from __future__ import annotations

import contextlib
import random
from typing import Any, Iterator, Mapping

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler


# ----------------------------------------------------------------------------------------------------------
# Data order: a resumable infinite sampler and per-sample seeding
# ----------------------------------------------------------------------------------------------------------
def _seed_from(*words: int) -> int:
    """A well-mixed 63-bit seed from integers (NumPy ``SeedSequence``)."""
    a, b = np.random.SeedSequence([int(w) & 0xFFFFFFFFFFFFFFFF for w in words]).generate_state(2, np.uint32)
    return ((int(a) << 32) | int(b)) & 0x7FFFFFFFFFFFFFFF


class InfiniteSampler(Sampler):
    """Endless shuffled sample order that can restart at any iteration; DDP-aware.

    The global sample stream ``g = 0, 1, 2, ...`` runs through epochs of ``n`` samples; epoch ``e`` is the
    permutation ``randperm(n)`` drawn from a generator seeded with ``(seed, e)``. At iteration ``t`` rank ``r``
    of ``world_size`` takes the ``batch_size`` consecutive stream positions starting at
    ``(t * world_size + r) * batch_size``, so the union over ranks is the single-process batch of size
    ``world_size * batch_size`` (the role of ``DistributedSampler``, but resumable mid-epoch).

    Each yielded item is ``(index, sample_seed)``; :class:`SeededDataset` uses the seed for the augmentation.
    Because nothing here has hidden state, prefetching workers do not disturb resuming.

    Args:
        n: dataset length. batch_size: samples per iteration and rank.
        seed: base seed; if ``None`` it is drawn from ``generator`` (or the global torch RNG).
        generator: injectable source of the base seed.
        rank, world_size: DDP position. start_iteration: first iteration to produce.
        shuffle: ``False`` gives ``0, 1, ..., n-1, 0, 1, ...``.

    Raises:
        ValueError: ``n < 1`` or ``batch_size < 1`` or a bad rank.
    """

    def __init__(self, n: int, batch_size: int, *, seed: int | None = None, generator: torch.Generator | None = None,
                 rank: int = 0, world_size: int = 1, start_iteration: int = 0, shuffle: bool = True) -> None:
        if n < 1:
            raise ValueError("InfiniteSampler: the dataset is empty")
        if batch_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"InfiniteSampler: bad batch_size={batch_size}, rank={rank}, world_size={world_size}")
        if seed is None:
            seed = int(torch.randint(0, 2**62, (), generator=generator))
        self.n, self.batch_size, self.seed = n, batch_size, int(seed)
        self.rank, self.world_size, self.start_iteration, self.shuffle = rank, world_size, start_iteration, shuffle
        self._epoch, self._perm = -1, torch.arange(n)

    def permutation(self, epoch: int) -> torch.Tensor:
        """Sample order of ``epoch``: ``(n,)`` int64."""
        if not self.shuffle:
            return torch.arange(self.n)
        if epoch != self._epoch:
            g = torch.Generator().manual_seed(_seed_from(self.seed, 0, epoch))
            self._epoch, self._perm = epoch, torch.randperm(self.n, generator=g)
        return self._perm

    def item(self, position: int) -> tuple[int, int]:
        """``(dataset index, sample seed)`` at global stream ``position``."""
        epoch, offset = divmod(position, self.n)
        return int(self.permutation(epoch)[offset]), _seed_from(self.seed, 1, position)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        t = self.start_iteration
        while True:
            first = (t * self.world_size + self.rank) * self.batch_size
            for j in range(self.batch_size):
                yield self.item(first + j)
            t += 1

    def state_dict(self) -> dict[str, int]:
        return {"seed": self.seed, "batch_size": self.batch_size, "world_size": self.world_size}


@contextlib.contextmanager
def _seeded(seed: int, generator: torch.Generator | None = None) -> Iterator[None]:
    """Run a block with torch CPU / Python / NumPy RNGs (and ``generator``) seeded, then restore them."""
    saved = (torch.get_rng_state(), random.getstate(), np.random.get_state(),
             generator.get_state() if generator is not None else None)
    torch.default_generator.manual_seed(seed)  # CPU only: leaves CUDA streams alone
    random.seed(seed)
    np.random.seed(seed % 2**32)
    if generator is not None:
        generator.manual_seed(seed)
    try:
        yield
    finally:
        torch.set_rng_state(saved[0])
        random.setstate(saved[1])
        np.random.set_state(saved[2])
        if generator is not None:
            generator.set_state(saved[3])


class SeededDataset(Dataset):
    """Wraps a dataset so item ``(index, seed)`` is drawn with all RNGs seeded by ``seed``.

    The random crop / flip of ``base[index]`` then depends only on the sample's seed, not on which process
    or worker computes it or what ran before; the caller's RNG states are restored afterwards. If ``base``
    has a ``generator`` attribute holding a ``torch.Generator`` (e.g. ``HRFolderDataset(generator=...)``), it
    is seeded the same way.
    """

    def __init__(self, base: Dataset) -> None:
        self.base = base

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]) -> Any:
        index, seed = key
        gen = getattr(self.base, "generator", None)
        with _seeded(seed, gen if isinstance(gen, torch.Generator) else None):
            return self.base[index]


# ----------------------------------------------------------------------------------------------------------
# RNG state capture (kept loadable with weights_only=True: tensors, ints, tuples, lists)
# ----------------------------------------------------------------------------------------------------------
def _rng_state(device: torch.device) -> dict[str, Any]:
    np_state = np.random.get_state(legacy=False)
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
        "python": random.getstate(),
        "numpy": {"key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
                  "pos": int(np_state["state"]["pos"]), "has_gauss": int(np_state["has_gauss"]),
                  "gauss": float(np_state["gauss"])},
    }


def _set_rng_state(state: Mapping[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    npy = state["numpy"]
    np.random.set_state({"bit_generator": "MT19937",
                         "state": {"key": npy["key"].numpy().astype(np.uint32), "pos": npy["pos"]},
                         "has_gauss": npy["has_gauss"], "gauss": npy["gauss"]})


def _seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
