"""The checks of exercises 02.x (ENLCN) and 03.x (DLSN) accept a right answer and reject wrong ones."""

import math

import torch
import torch.nn.functional as F

from srlib.attention.buckets import n_hash_buckets
from srlib.course.exercises import check, get, list_exercises


def _phi(u, proj):
    return torch.exp(u @ proj.T - u.pow(2).sum(-1, keepdim=True) / 2) / math.sqrt(proj.shape[0])


def _topk_loss(q, k):
    top = (q @ k.transpose(1, 2)).topk(65, dim=-1).values.exp()
    return F.relu(1 - torch.log(top[..., :15].mean(-1) / (top[..., 50:65].mean(-1) + 1e-6))).mean()


def test_notebook_02_checks():
    assert check("02.1", _phi, quiet=True)
    assert not check("02.1", lambda u, proj: _phi(u, proj) + 1e-4 / math.sqrt(proj.shape[0]), quiet=True)  # official eps
    assert not check("02.1", lambda u, proj: _phi(u, proj).T, quiet=True)  # wrong shape
    assert check("02.2", math.sqrt(math.expm1(10) / 256), quiet=True)
    assert not check("02.2", math.sqrt(math.expm1(10)), quiet=True)  # without 1/m
    assert check("02.3", ((0, 46), (184, 230)), quiet=True)
    assert not check("02.3", ((0, 15), (50, 65)), quiet=True)  # the official ranks
    assert check("02.5", _topk_loss, quiet=True)
    assert not check("02.5", lambda q, k: _topk_loss(q, k) * 0, quiet=True)  # a loss of 0 is not the loss
    assert not check("02.1", None, quiet=True)  # "not answered yet", never raises


def test_notebook_03_checks():
    assert check("03.1", (34, 78), quiet=True)
    assert not check("03.1", (33, 78), quiet=True)  # 40x40 / 48 = 33 is odd: rounded up to 34
    assert not check("03.1", (12, 128), quiet=True)  # the numbers of the notebook's own patch and crop
    assert not check("03.1", "34", quiet=True) and not check("03.1", None, quiet=True)
    assert check("03.2", lambda x, m: torch.einsum("blc,crm->brlm", x, m).argmax(-1), quiet=True)
    assert not check("03.2", lambda x, m: torch.einsum("blc,crm->brlm", x, m).argmin(-1), quiet=True)
    first = next(n for n in range(128, 20000) if n_hash_buckets(n, 128) > 64)
    assert first == 65 * 128
    assert check("03.3", first, quiet=True) and not check("03.3", first + 128, quiet=True)
    assert check("03.5", 144, quiet=True)
    assert not check("03.5", 48, quiet=True)  # one chunk only: the position is also a key of its two neighbours
    assert not check("03.5", 1, quiet=True) and not check("03.5", None, quiet=True)


def test_every_exercise_has_a_label_and_open_questions_have_no_check():
    keys = {ex.key: ex for ex in list_exercises("02") + list_exercises("03")}
    assert sorted(keys) == [f"02.{i}" for i in range(1, 7)] + [f"03.{i}" for i in range(1, 8)]
    assert {k for k, ex in keys.items() if ex.checker is None} == {"02.4", "02.6", "03.4", "03.6", "03.7"}
    assert get("03.7").difficulty == "★★★ challenge"
    for ex in keys.values():  # graded: points by difficulty, and a worked answer in words
        assert 1 <= ex.points <= 3 and len(ex.solution) > 40, ex.key
