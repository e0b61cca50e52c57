"""Training loop and command line for every srlib network (single process, or DDP under ``torchrun``).

The recipe is the one the five papers inherit from EDSR-PyTorch (``src/trainer.py``, ``src/utility.py``):
L1 loss on RGB in ``[0, 1]``, Adam (betas 0.9/0.999, eps 1e-8), learning rate 1e-4 halved at fixed
milestones, random HR patches with flips/rotations, periodic PSNR on a benchmark. The official code counts
"epochs" of 1000 iterations (``--test_every 1000``, batch 16); here everything counts iterations: NLSN's
1000 epochs with decay at 200/400/600/800 become 1,000,000 iterations with milestones 200k/400k/600k/800k.

Exact resume. A checkpoint holds the model, optimizer, scheduler, AMP scaler, the iteration, every random
state (torch CPU/CUDA, Python ``random``, NumPy; one set per rank under DDP) and the config. The data order is
a pure function of ``(seed, sample position)``: :class:`InfiniteSampler` draws epoch permutations from
generators seeded with ``(seed, epoch)`` and gives every sample its own seed, under which the dataset's random
crop/flip is drawn (:class:`SeededDataset`). So training ``N`` iterations, or ``k`` iterations, a kill and a
resume for ``N - k`` more, give bit-identical weights on CPU, whatever ``num_workers`` is.

Run folder. One training at a time writes a run folder: rank 0 holds a lock (:data:`LOCK_NAME`, naming its PID
and host) and a second live writer is refused; a lock left by a killed process is taken over with a note, and
the temporary files of a checkpoint write it interrupted are removed. Resuming checks that the saved training
and network configs equal the new ones (``--allow-config-change`` overrides, and says so). The command line
checks everything it can before training (``--out`` writable, ``--device`` present, model arguments, every
training image) and reports a bad command line as one ``error:`` line on stderr with exit status 2.

Command line::

    python -m srlib.train --model edsr --scale 2 --preset small --iterations 2000 --out runs/edsr_x2
    torchrun --nproc_per_node 4 -m srlib.train --model nlsn --scale 2 --batch-size 4 --out runs/nlsn_x2

With ``WORLD_SIZE > 1`` (torchrun) the process group is initialised (NCCL on CUDA, Gloo on CPU), every rank
reads its own share of each global batch, gradients are averaged by ``DistributedDataParallel``, and only
rank 0 validates and writes files. ``batch_size`` is per rank.

Modules: :mod:`~srlib.train.config` (:class:`TrainConfig`), :mod:`~srlib.train.seeding` (data order and random
states), :mod:`~srlib.train.distributed` (ranks and devices), :mod:`~srlib.train.runlock` (the run folder lock),
:mod:`~srlib.train.resume` (the resume configuration check), :mod:`~srlib.train.loop` (:func:`train` and its
steps) and :mod:`~srlib.train.cli` (the command line, :data:`PAPER_SCHEDULES`, :func:`paper_command`).
"""

from .cli import PAPER_SCHEDULES, main, paper_command
from .config import CHECKPOINT_FORMAT, TrainConfig
from .loop import train
from .resume import ResumeConfigError
from .runlock import LOCK_NAME, RunLockedError
from .seeding import InfiniteSampler, SeededDataset

__all__ = ["TrainConfig", "train", "InfiniteSampler", "SeededDataset", "main", "CHECKPOINT_FORMAT",
           "PAPER_SCHEDULES", "paper_command", "RunLockedError", "ResumeConfigError", "LOCK_NAME"]
