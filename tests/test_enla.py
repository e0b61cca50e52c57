"""ENLA kernel attention, ENLCA module and contrastive loss (ENLCN paper Eqs. 3-10; official Zj-BinXia/ENLCA)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from srlib.attention.enla import (
    ENLA,
    ENLCA,
    contrastive_loss,
    enla,
    exp_kernel_attention,
    gaussian_orthogonal_matrix,
    linear_attention,
    positive_random_features,
    redraw_projections,
)
from srlib.reference import load_case, run_case

TOL = dict(rtol=0, atol=1e-10)


# ---------------------------------------------------------------- official reference cases
@pytest.fixture(scope="module")
def eval_case(reference_root):
    return load_case(reference_root / "modules" / "enlca_case1.pt")


@pytest.fixture(scope="module")
def train_case(reference_root):
    return load_case(reference_root / "modules" / "enlca_train_case1.pt")


def test_eval_case_output(eval_case):
    got = run_case(eval_case)
    assert set(got) >= {"output"}
    torch.testing.assert_close(got["output"], eval_case["output"], **TOL)
    assert "contrastive_loss" not in got


def test_train_case_output_and_loss(train_case):
    got = run_case(train_case)
    torch.testing.assert_close(got["output"], train_case["output"], **TOL)
    torch.testing.assert_close(got["contrastive_loss"], train_case["contrastive_loss"], **TOL)
    assert got["contrastive_loss"].item() > 0.02  # the hinge is active somewhere


def test_construction_reproduces_official_init(eval_case):
    """Same seed, same draw order: conv weights and the QR-built projection equal the official ones bitwise."""
    torch.set_default_dtype(torch.float64)
    torch.manual_seed(eval_case["seed"])
    module = ENLCA(**eval_case["config"])
    assert list(module.state_dict()) == list(eval_case["state_dict"])
    for key, value in eval_case["state_dict"].items():
        assert torch.equal(module.state_dict()[key], value), key
    assert torch.equal(module.attn_fn.projection_matrix, eval_case["projection_matrix"])


def test_paper_feature_map_differs_slightly(eval_case):
    torch.set_default_dtype(torch.float64)
    module = ENLCA(**eval_case["config"], feature_eps=0.0)
    module.load_state_dict(eval_case["state_dict"])
    module.eval()
    with torch.no_grad():
        diff = (module(eval_case["input"]) - eval_case["output"]).abs().max().item()
    assert 1e-12 < diff < 1e-2


# ---------------------------------------------------------------- random matrix F
def test_orthogonal_matrix_blocks_and_norms():
    g = torch.Generator().manual_seed(3)
    m, d = 20, 8  # two full blocks + 4 rows of a third
    mat = gaussian_orthogonal_matrix(m, d, generator=g, dtype=torch.float64)
    assert mat.shape == (m, d)
    for start in range(0, m, d):
        block = mat[start:start + d]
        unit = block / block.norm(dim=1, keepdim=True)
        torch.testing.assert_close(unit @ unit.T, torch.eye(len(block), dtype=torch.float64), rtol=0, atol=1e-12)
    fixed = gaussian_orthogonal_matrix(m, d, scaling="sqrt_d", generator=g, dtype=torch.float64)
    torch.testing.assert_close(fixed.norm(dim=1), torch.full((m,), math.sqrt(d), dtype=torch.float64))
    # chi-distributed row lengths: not all equal
    assert mat.norm(dim=1).std() > 0.1


def test_matrix_generator_determinism_and_iid():
    a = gaussian_orthogonal_matrix(16, 4, generator=torch.Generator().manual_seed(1))
    b = gaussian_orthogonal_matrix(16, 4, generator=torch.Generator().manual_seed(1))
    c = gaussian_orthogonal_matrix(16, 4, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)
    iid = gaussian_orthogonal_matrix(16, 4, orthogonal=False, generator=torch.Generator().manual_seed(1))
    assert torch.equal(iid, torch.randn(16, 4, generator=torch.Generator().manual_seed(1)))
    with pytest.raises(ValueError, match="scaling"):
        gaussian_orthogonal_matrix(4, 4, scaling="bad")
    with pytest.raises(ValueError, match="m=0"):
        gaussian_orthogonal_matrix(0, 4)


# ---------------------------------------------------------------- ENLA kernel
def test_feature_map_positive_and_formula():
    g = torch.Generator().manual_seed(0)
    u = torch.randn(2, 5, 3, generator=g, dtype=torch.float64)
    proj = torch.randn(7, 3, generator=g, dtype=torch.float64)
    phi = positive_random_features(u, proj)
    assert phi.shape == (2, 5, 7) and bool((phi > 0).all())
    i, j, r = 1, 3, 4
    expect = (math.exp(float(proj[r] @ u[i, j]) - float(u[i, j] @ u[i, j]) / 2) + 1e-4) / math.sqrt(7)
    assert phi[i, j, r].item() == pytest.approx(expect, rel=1e-12)
    with pytest.raises(ValueError, match="mismatch"):
        positive_random_features(u, torch.randn(7, 4, dtype=torch.float64))


@pytest.mark.parametrize("budget", [1, 3000, 2**20])  # bytes: one row per block, a few blocks, a single pass
def test_enla_inference_blocks_equal_the_autograd_path(budget, monkeypatch):
    """Without autograd ENLA sums over row blocks within the budget: same result as Eqs. (4)-(6)."""
    import srlib.attention.blocking as blocking_module

    monkeypatch.setattr(blocking_module, "_budgets", {"cpu": budget})
    g = torch.Generator().manual_seed(2)
    q = torch.randn(2, 37, 3, generator=g, dtype=torch.float64)
    k = torch.randn(2, 29, 3, generator=g, dtype=torch.float64)
    v = torch.randn(2, 29, 4, generator=g, dtype=torch.float64)
    proj = torch.randn(10, 3, generator=g, dtype=torch.float64)
    want = linear_attention(positive_random_features(q, proj), positive_random_features(k, proj), v)
    with torch.no_grad():
        got = enla(q, k, v, proj)
    torch.testing.assert_close(got, want, rtol=1e-13, atol=0)
    qg = q.clone().requires_grad_()
    got_grad_path = enla(qg, k, v, proj)
    assert got_grad_path.grad_fn is not None
    torch.testing.assert_close(got_grad_path.detach(), want, rtol=1e-13, atol=0)  # _BlockedENLA, same blocks


@pytest.mark.parametrize("budget", [1, 3000, 2**20])  # bytes: one row per block, a few blocks, a single pass
def test_enla_training_path_gradients_equal_autograd(budget, monkeypatch):
    """The training path (_BlockedENLA: blocked forward, backward recomputing the features) gives the
    gradients autograd gives through Eqs. (4)-(6) on whole feature matrices (float64; gradcheck too)."""
    import srlib.attention.blocking as blocking_module

    monkeypatch.setattr(blocking_module, "_budgets", {"cpu": budget})
    g = torch.Generator().manual_seed(3)
    q = (0.5 * torch.randn(2, 37, 3, generator=g, dtype=torch.float64)).requires_grad_()
    k = (0.5 * torch.randn(2, 29, 3, generator=g, dtype=torch.float64)).requires_grad_()
    v = torch.randn(2, 29, 4, generator=g, dtype=torch.float64, requires_grad=True)
    proj = torch.randn(10, 3, generator=g, dtype=torch.float64)
    w = torch.randn(2, 37, 4, generator=g, dtype=torch.float64)
    got = enla(q, k, v, proj)
    assert type(got.grad_fn).__name__ == "_BlockedENLABackward"
    want = linear_attention(positive_random_features(q, proj), positive_random_features(k, proj), v)
    torch.testing.assert_close(got, want, rtol=1e-13, atol=0)
    for a, b in zip(torch.autograd.grad((got * w).sum(), (q, k, v)), torch.autograd.grad((want * w).sum(), (q, k, v))):
        torch.testing.assert_close(a, b, rtol=1e-11, atol=1e-13)
    if budget == 3000:
        assert torch.autograd.gradcheck(lambda a, b, c: enla(a, b, c, proj), (q, k, v), eps=1e-6, atol=1e-8)
    # a projection that wants a gradient takes the autograd path
    p2 = proj.clone().requires_grad_()
    assert type(enla(q, k, v, p2).grad_fn).__name__ != "_BlockedENLABackward"


def test_linear_attention_equals_quadratic_form():
    """Eqs. (5)-(6) computed right-to-left equal the explicit (L, L) weights applied to V."""
    g = torch.Generator().manual_seed(1)
    pq = torch.rand(2, 9, 6, generator=g, dtype=torch.float64) + 0.1
    pk = torch.rand(2, 11, 6, generator=g, dtype=torch.float64) + 0.1
    v = torch.randn(2, 11, 4, generator=g, dtype=torch.float64)
    w = pq @ pk.transpose(1, 2)
    torch.testing.assert_close(linear_attention(pq, pk, v), (w / w.sum(-1, keepdim=True)) @ v, rtol=0, atol=1e-13)


def test_enla_error_shrinks_with_m():
    """phi(Q)^T phi(K) -> exp(Q^T K): the ENLA output approaches exact softmax attention as m grows."""
    errors = []
    for m in (16, 64, 256, 1024):
        per_seed = []
        for seed in range(8):
            g = torch.Generator().manual_seed(seed)
            q = F.normalize(torch.randn(1, 64, 8, generator=g, dtype=torch.float64), dim=-1)
            k = F.normalize(torch.randn(1, 64, 8, generator=g, dtype=torch.float64), dim=-1)
            v = torch.randn(1, 64, 4, generator=g, dtype=torch.float64)
            proj = gaussian_orthogonal_matrix(m, 8, generator=g, dtype=torch.float64)
            exact = exp_kernel_attention(q, k, v)
            per_seed.append(((enla(q, k, v, proj, eps=0.0) - exact).norm() / exact.norm()).item())
        errors.append(sum(per_seed) / len(per_seed))
    assert all(a > b for a, b in zip(errors, errors[1:])), errors
    assert errors[-1] < errors[0] / 2.5, errors


def test_injected_projection_gives_identical_outputs():
    g = torch.Generator().manual_seed(5)
    proj = gaussian_orthogonal_matrix(32, 4, generator=g)
    a = ENLCA(16, 4, 0.5, n_features=32)
    b = ENLCA(16, 4, 0.5, n_features=32)
    b.load_state_dict(a.state_dict())
    a.attn_fn.set_projection(proj)
    b.attn_fn.set_projection(proj.clone())
    x = torch.randn(2, 16, 5, 6, generator=g)
    a.eval(), b.eval()
    assert torch.equal(a(x), b(x))
    q, k, v = a.embed(x)
    torch.testing.assert_close(a.attn_fn(q, k, v), enla(q, k, v, proj))
    explicit = ENLA(4, 32, projection=proj)
    assert torch.equal(explicit.projection_matrix, proj)
    # same generator seed at construction -> same draw
    c = ENLA(4, 32, generator=torch.Generator().manual_seed(9))
    d = ENLA(4, 32, generator=torch.Generator().manual_seed(9))
    assert torch.equal(c.projection_matrix, d.projection_matrix)
    with pytest.raises(ValueError, match="shape"):
        a.attn_fn.set_projection(torch.randn(31, 4))


def test_redraw_changes_projection_and_output():
    module = ENLCA(16, 4, 0.5, n_features=32).eval()
    x = torch.randn(1, 16, 6, 6)
    before_p = module.attn_fn.projection_matrix.clone()
    before = module(x)
    module.attn_fn.redraw_projection(torch.Generator().manual_seed(11))
    assert not torch.equal(module.attn_fn.projection_matrix, before_p)
    assert not torch.allclose(module(x), before)
    again = module.attn_fn.projection_matrix.clone()
    assert redraw_projections(module, torch.Generator().manual_seed(11)) == 1
    assert torch.equal(module.attn_fn.projection_matrix, again)  # same seed, same draw


# ---------------------------------------------------------------- contrastive loss
def _ramp(n: int, step: float) -> tuple[torch.Tensor, torch.Tensor]:
    """q_i = 1, k_j = j*step (d = 1): every row of T = q k^T is (0, step, ..., (n-1) step)."""
    q = torch.ones(1, n, 1, dtype=torch.float64)
    k = (torch.arange(n, dtype=torch.float64) * step).view(1, n, 1)
    return q, k


def test_paper_contrastive_loss_hand_computed():
    # L = 50: n1 L = 1 relevant score (rank 0), irrelevant rank n2 L = 4. Sorted row: 4.9, 4.8, ...
    # Eq. (10): -log(exp(4.9) / exp(4.5)) + 1 = 0.6
    q, k = _ramp(50, 0.1)
    assert contrastive_loss(q, k, variant="paper").item() == pytest.approx(0.6, abs=1e-12)
    # L = 100: 2 relevant (9.9, 9.8), irrelevant ranks 8, 9 (9.1, 9.0): log-mean ratio 0.8 -> 0.2
    q, k = _ramp(100, 0.1)
    assert contrastive_loss(q, k, variant="paper").item() == pytest.approx(0.2, abs=1e-12)
    # no hinge: with wide gaps the paper loss goes negative
    q, k = _ramp(50, 1.0)
    assert contrastive_loss(q, k, variant="paper").item() == pytest.approx(-3.0, abs=1e-12)


def test_official_contrastive_loss_formula_and_difference():
    q, k = _ramp(100, 0.02)  # sorted row 1.98, 1.96, ...
    t = torch.arange(99, -1, -1, dtype=torch.float64) * 0.02
    pos = t[0:15].exp().mean()
    neg = t[50:65].exp().mean()
    expect = max(0.0, 1 - math.log(pos / (neg + 1e-6)))
    official = contrastive_loss(q, k).item()
    assert official == pytest.approx(expect, abs=1e-12) and official > 0
    assert contrastive_loss(q, k, variant="paper").item() != pytest.approx(official, abs=1e-3)
    # hinge: large gaps -> exactly zero in the official variant
    q, k = _ramp(100, 1.0)
    assert contrastive_loss(q, k).item() == 0.0
    # ranks [50:] (up to L), as in some revisions of the official code
    q, k = _ramp(100, 0.02)
    tail = t[50:].exp().mean()
    expect = max(0.0, 1 - math.log(t[0:5].exp().mean() / (tail + 1e-6)))
    got = contrastive_loss(q, k, positive=(0, 5), negative=(50, None)).item()
    assert got == pytest.approx(expect, abs=1e-12)


def test_contrastive_loss_errors():
    q, k = _ramp(50, 0.1)
    with pytest.raises(ValueError, match="at least 65"):
        contrastive_loss(q, k)  # official ranks need L >= 65
    with pytest.raises(ValueError, match="variant"):
        contrastive_loss(q, k, variant="other")
    with pytest.raises(ValueError, match="only 10"):
        contrastive_loss(*_ramp(10, 0.1), variant="paper", n2=1.0)


def test_module_loss_train_only_and_differentiable():
    torch.manual_seed(0)
    module = ENLCA(16, 4, 0.5, n_features=16)
    x = torch.randn(2, 16, 9, 9)
    module.train()
    out, loss = module(x, return_loss=True)
    assert loss is not None and loss.dim() == 0 and module.last_loss is loss
    q, k, _ = module.embed(x)
    torch.testing.assert_close(loss, contrastive_loss(q, k))
    (out.sum() + loss).backward()
    assert module.conv_match1[0].weight.grad is not None
    module.eval()
    out_eval, loss_eval = module(x, return_loss=True)
    assert loss_eval is None and module.last_loss is None
    torch.testing.assert_close(out_eval, out.detach())  # the loss does not change the output
    paper = ENLCA(16, 4, 0.5, n_features=16, loss_variant="paper")
    paper.load_state_dict(module.state_dict())
    paper.train()
    torch.testing.assert_close(paper(x, return_loss=True)[1], contrastive_loss(q, k, variant="paper"))


def test_module_errors():
    with pytest.raises(ValueError, match="divisible"):
        ENLCA(10, 4)
    with pytest.raises(ValueError, match="loss_variant"):
        ENLCA(16, 4, loss_variant="bad")
    module = ENLCA(16, 4)
    with pytest.raises(ValueError, match="feature map"):
        module(torch.randn(1, 8, 4, 4))
    module.train()
    with pytest.raises(ValueError, match="65"):
        module(torch.randn(1, 16, 4, 4))  # L = 16 < 65 keys for the official ranks
    module.eval()
    assert module(torch.randn(1, 16, 4, 4)).shape == (1, 16, 4, 4)  # eval needs no minimum size


def test_exact_forward_is_dense_softmax():
    module = ENLCA(16, 4, 0.5, n_features=16).double().eval()
    x = torch.randn(1, 16, 5, 5, dtype=torch.float64)
    q, k, v = module.embed(x)
    expect = 0.5 * (torch.softmax(q @ k.transpose(1, 2), -1) @ v).transpose(1, 2).reshape(1, 16, 5, 5) + x
    torch.testing.assert_close(module.exact_forward(x), expect)


def test_kernel_runs_in_float32_under_autocast():
    """exp(F u) would overflow half precision: under autocast the ENLA kernel is computed in float32."""
    module = ENLCA(32, 4, 0.5).eval()
    x = torch.randn(1, 32, 12, 12) * 3
    q, k, v = module.embed(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = module.attn_fn(q, k, v)
    assert y.dtype == torch.float32
    torch.testing.assert_close(y, module.attn_fn(q, k, v), rtol=0, atol=1e-6)


def test_official_contrastive_loss_topk_equals_full_sort():
    """The official ranks [0, 15) / [50, 65) are read from a top-65 (not a full sort): same value and gradient."""
    g = torch.Generator().manual_seed(11)
    q = torch.randn(2, 120, 8, generator=g, dtype=torch.float64, requires_grad=True)
    k = torch.randn(2, 120, 8, generator=g, dtype=torch.float64)
    got = contrastive_loss(q, k)
    s = torch.exp(q @ k.transpose(1, 2)).sort(dim=-1, descending=True).values  # Eq. (9), full sort
    want = torch.relu(1.0 - torch.log(s[..., 0:15].mean(-1) / (s[..., 50:65].mean(-1) + 1e-6))).mean()
    assert got.item() == want.item()
    (g_got,) = torch.autograd.grad(got, q)
    (g_want,) = torch.autograd.grad(want, q)
    torch.testing.assert_close(g_got, g_want, rtol=0, atol=1e-15)
