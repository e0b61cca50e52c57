"""GLA: super-bit LSH, learnable similarity scores, official vs paper variants, reference equality, errors."""

import math

import pytest
import torch
import torch.nn.functional as F

from srlib.attention.buckets import n_hash_buckets
from srlib.attention.gla import (
    GLA,
    GlobalLearnableAttention,
    combine_rounds_paper,
    orthonormal_directions,
    paper_round_weights,
    superbit_lsh,
    superbit_projections,
)
from srlib.attention.hashing import argmax_hash, with_round_offsets
from srlib.reference import load_case, run_case


# ----------------------------------------------------------------------------------------------- reference


def test_reference_case_output_and_codes(reference_root):
    case = load_case(reference_root / "modules" / "gla_case1.pt")
    got = run_case(case)["output"]
    torch.testing.assert_close(got, case["output"], rtol=1e-10, atol=1e-10)
    torch.set_default_dtype(torch.float64)
    m = GLA(**case["config"])
    m.load_state_dict(case["state_dict"])
    m.keep_details = True
    with torch.no_grad():
        m(case["input"], projections=case["rotations"])
    d = m.details
    assert d["n_buckets"] == case["n_buckets"] == 14
    assert d["layout"].padding == case["padding"]
    assert torch.equal(with_round_offsets(d["codes"], d["n_buckets"]), case["hash_codes"])


def test_superbit_draw_equals_official_orthogonal_init():
    # official: n_hashes calls of torch.nn.init.orthogonal_ on [C, b], concatenated -> [C, R, b]
    for C, b in [(16, 14), (8, 20)]:
        torch.manual_seed(11)
        ours = superbit_projections(C, 3, b, dtype=torch.float64)
        torch.manual_seed(11)
        theirs = torch.cat([torch.nn.init.orthogonal_(torch.empty(C, b, dtype=torch.float64)) for _ in range(3)], -1)
        torch.testing.assert_close(ours, theirs.reshape(C, 3, b), rtol=0, atol=1e-14)  # batched vs single QR
        g1, g2 = torch.Generator().manual_seed(4), torch.Generator().manual_seed(4)
        assert torch.equal(
            orthonormal_directions(C, b, generator=g1), torch.nn.init.orthogonal_(torch.empty(C, b), generator=g2)
        )


# ----------------------------------------------------------------------------------------------- super-bit


@pytest.mark.parametrize("C,b", [(16, 14), (16, 16), (8, 20)])
def test_superbit_projections_are_orthonormal(C, b):
    P = superbit_projections(C, 3, b, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert P.shape == (C, 3, b)
    for r in range(3):
        M = P[:, r, :]
        gram = M.T @ M if b <= C else M @ M.T  # columns orthonormal, or rows when b > C
        torch.testing.assert_close(gram, torch.eye(min(b, C), dtype=torch.float64), rtol=0, atol=1e-12)
    assert not torch.allclose(P[:, 0], P[:, 1])  # rounds are independent draws


def test_qr_with_positive_diagonal_is_gram_schmidt():
    g = torch.Generator().manual_seed(3)
    M = orthonormal_directions(6, 4, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    H = torch.empty(6, 4, dtype=torch.float64).normal_(0, 1, generator=g)  # the same Gaussian draw
    basis = []
    for j in range(4):  # classical Gram-Schmidt, Algorithm 1 line 6
        u = H[:, j].clone()
        for e in basis:
            u -= (u @ e) * e
        basis.append(u / u.norm())
    torch.testing.assert_close(M, torch.stack(basis, 1), rtol=0, atol=1e-12)


def test_superbit_sign_bits_estimate_angle_with_lower_variance_than_gaussian():
    """Super-bit LSH (Ji et al. 2012, cited as DLSN [12]): for sign bits ``sign(v . x)`` the fraction of
    differing bits estimates ``theta / pi`` for i.i.d. Gaussian *and* orthonormalised directions, but the
    orthonormalised ("super-bit") estimator has a smaller variance."""
    d, K, T = 16, 16, 4000  # one full orthonormal basis per trial, T independent trials
    g = torch.Generator().manual_seed(0)
    sb = superbit_projections(d, T, K, generator=g, dtype=torch.float64)  # (d, T, K)
    ga = torch.randn(d, T, K, generator=g, dtype=torch.float64)
    for theta in (math.pi / 4, math.pi / 2):
        x = torch.zeros(d, dtype=torch.float64)
        y = torch.zeros(d, dtype=torch.float64)
        x[0], y[0], y[1] = 1.0, math.cos(theta), math.sin(theta)

        def estimate(P):
            px, py = torch.einsum("d,dtk->tk", x, P), torch.einsum("d,dtk->tk", y, P)
            return ((px > 0) != (py > 0)).double().mean(-1)  # (T,) Hamming fraction per trial

        e_sb, e_ga = estimate(sb), estimate(ga)
        assert abs(e_sb.mean().item() - theta / math.pi) < 0.01  # both unbiased
        assert abs(e_ga.mean().item() - theta / math.pi) < 0.01
        assert e_sb.var() < 0.85 * e_ga.var()  # measured ratio ~0.73 (pi/4) and lower at pi/2


def test_superbit_argmax_hash_collides_more_for_closer_pairs():
    d, b, T = 16, 8, 3000
    P = superbit_projections(d, T, b, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    probs = []
    for theta in (0.2, 0.6, 1.0, 1.4):
        pair = torch.zeros(1, 2, d, dtype=torch.float64)
        pair[0, 0, 0], pair[0, 1, 0], pair[0, 1, 1] = 1.0, math.cos(theta), math.sin(theta)
        codes = argmax_hash(pair, P, signed=False)[0]  # (T, 2)
        probs.append((codes[:, 0] == codes[:, 1]).double().mean().item())
    assert all(a > b_ + 0.05 for a, b_ in zip(probs, probs[1:])), probs
    assert probs[0] > 0.7 and probs[-1] < 0.2


def test_superbit_lsh_codes_and_errors():
    x = torch.randn(2, 30, 8, generator=torch.Generator().manual_seed(0))
    codes, P = superbit_lsh(x, 6, 3, generator=torch.Generator().manual_seed(1))
    assert codes.shape == (2, 3, 30) and P.shape == (8, 3, 6)
    assert codes.min() >= 0 and codes.max() < 6
    again, _ = superbit_lsh(x * 3.0, 6, 3, projections=P)  # scale invariant, replayable
    assert torch.equal(codes, again)
    with pytest.raises(ValueError, match=r"\(8, 3, 6\)"):
        superbit_lsh(x, 6, 3, projections=torch.randn(8, 3, 3))
    with pytest.raises(ValueError, match="positive"):
        orthonormal_directions(0, 3)


# ----------------------------------------------------------------------------------------------- paper vs code


def _hand_gla(m: GlobalLearnableAttention, x: torch.Tensor, proj: torch.Tensor) -> torch.Tensor:
    """GLA written out position by position from the equations (batch of 1)."""
    _, C, H, W = x.shape
    L, c, R = H * W, m.chunk_size, m.n_hashes
    q = m.conv_match(x)[0].flatten(1).T  # (L, C')
    v = m.conv_assembly(x)[0].flatten(1).T  # (L, C)
    f = m.conv_assembly_fc(x)[0].flatten(1).T if m.lss_variant != "none" else None
    pad = (-L) % c
    n = (L + pad) // c
    ret = torch.zeros(R, L, C, dtype=x.dtype)
    lse = torch.zeros(R, L, dtype=x.dtype)
    ssum = torch.zeros(R, L, dtype=x.dtype)
    for r in range(R):
        codes = (q @ proj[:, r, :]).argmax(-1)  # Eq. (12)-(13)
        order = torch.argsort(codes, stable=True)
        chunks = torch.cat([order, order[L - pad :]]).view(n, c)  # Eq. (15), padded with the last rows
        for s in range(L):
            p, k, i = order[s].item(), s // c, s % c
            cand = torch.cat([chunks[k], chunks[(k - 1) % n], chunks[(k + 1) % n]])  # 3c candidate keys
            keys = q[cand] / q[cand].norm(dim=-1, keepdim=True).clamp_min(5e-5)
            s_f = keys @ q[p]  # Eq. (10)
            if m.lss_variant == "official":
                s_l = torch.stack([m.fc(f[j])[i] for j in cand])  # key j's MLP, query slot i
            elif m.lss_variant == "paper":
                s_l = m.fc(f[p])  # Eq. (11): s_l^j(x_i), the query's MLP, one output per key
            else:
                s_l = torch.zeros_like(s_f)
            s_ = s_f + s_l  # Eq. (9)
            ret[r, p] = torch.softmax(s_, 0) @ v[cand]  # Eq. (14)
            lse[r, p] = torch.logsumexp(s_, 0)
            ssum[r, p] = s_.sum()
    if m.round_weights == "official":
        w = torch.softmax(lse, 0)  # sum_j exp(s) normalised over rounds
    else:
        total = ssum.sum(0)
        w = torch.where(total == 0, 1.0 / R, ssum / total)  # Eq. (18) as written; 0/0 -> equal weights
    y = (w.unsqueeze(-1) * ret).sum(0)  # Eq. (17)
    return m.res_scale * y.T.reshape(1, C, H, W) + x


@pytest.mark.parametrize("lss", ["official", "paper", "none"])
@pytest.mark.parametrize("rounds", ["official", "paper"])
def test_gla_equals_hand_written_equations(lss, rounds):
    torch.manual_seed(0)
    m = GLA(n_hashes=2, channels=4, reduction=2, chunk_size=5, res_scale=0.5, lss_variant=lss,
            round_weights=rounds).double()
    x = torch.randn(1, 4, 4, 4, dtype=torch.float64)  # L=16: 4 buckets, 4 chunks, padding 4
    proj = superbit_projections(2, 2, n_hash_buckets(16, 5), generator=torch.Generator().manual_seed(2),
                                dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(m(x, projections=proj), _hand_gla(m, x, proj), rtol=1e-10, atol=1e-10)
    if lss == "paper":
        assert m.fc[0].weight.shape == (15, 4) and m.fc[2].weight.shape == (15, 15)  # n = 3c candidates
    if lss == "none":
        assert not hasattr(m, "fc") and not hasattr(m, "conv_assembly_fc")


@pytest.mark.parametrize("lss", ["official", "paper", "none"])
@pytest.mark.parametrize("budget", [1, 2**30])  # bytes: one chunk per block, a single pass
def test_blocked_paths_equal_the_whole_learned_term(lss, budget, monkeypatch):
    """By default GLA hands bucketed_attention the MLP rows of the keys (key_bias, a third of the learned
    term), added block by block in inference and training; with keep_details it builds the whole
    (B, R, n, c, 3c) term. Outputs (no_grad and autograd) and parameter gradients agree (float64)."""
    import srlib.attention.blocking as blocking_module

    monkeypatch.setattr(blocking_module, "_budgets", {"cpu": budget})
    torch.manual_seed(1)
    m = GLA(n_hashes=2, channels=4, reduction=2, chunk_size=6, lss_variant=lss).double()
    x = torch.randn(2, 4, 7, 9, dtype=torch.float64)  # L = 63: 11 chunks, 3 padded rows
    proj = superbit_projections(2, 2, n_hash_buckets(63, 6), generator=torch.Generator().manual_seed(3),
                                dtype=torch.float64)
    w = torch.randn_like(x)
    with torch.no_grad():
        blocked = m(x, projections=proj)
    trained = m(x, projections=proj)
    got = torch.autograd.grad((trained * w).sum(), list(m.parameters()))
    m.keep_details = True
    whole = m(x, projections=proj)
    want = torch.autograd.grad((whole * w).sum(), list(m.parameters()))
    torch.testing.assert_close(blocked, whole.detach(), rtol=0, atol=1e-12)
    torch.testing.assert_close(trained, whole, rtol=0, atol=1e-12)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_paper_variants_differ_from_official(reference_root):
    case = load_case(reference_root / "modules" / "gla_case1.pt")
    torch.set_default_dtype(torch.float64)
    x, rot = case["input"], case["rotations"]
    official = GLA(**case["config"])
    official.load_state_dict(case["state_dict"])
    paper_rounds = GLA(**case["config"], round_weights="paper")
    paper_rounds.load_state_dict(case["state_dict"])  # same parameters, other round weights
    no_lss = GLA(**case["config"], lss_variant="none")
    lss_keys = ("fc.", "conv_assembly_fc.")
    no_lss.load_state_dict({k: v for k, v in case["state_dict"].items() if not k.startswith(lss_keys)})
    with torch.no_grad():
        y = official(x, projections=rot)
        gaps = [(y - other(x, projections=rot)).abs().max().item() for other in (paper_rounds, no_lss)]
    assert min(gaps) > 1e-4
    # the official checkpoint does not fit the paper's LSS (MLP sizes 3c instead of c)
    with pytest.raises(RuntimeError, match="size mismatch"):
        GLA(**case["config"], lss_variant="paper").load_state_dict(case["state_dict"])


def test_official_lss_ignores_query_content_paper_lss_does_not():
    """Official: s_l(i, j) = MLP(f_j)[i] is the same for every query that sits in slot i; paper: it changes with f_i."""
    torch.manual_seed(1)
    for variant, depends_on_query in (("official", False), ("paper", True)):
        m = GLA(n_hashes=1, channels=4, reduction=2, chunk_size=4, lss_variant=variant).double()
        m.keep_details = True
        x = torch.randn(1, 4, 4, 4, dtype=torch.float64)
        proj = superbit_projections(2, 1, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        with torch.no_grad():
            m(x, projections=proj)
            lss, layout = m.details["lss"], m.details["layout"]
            feats = m.conv_assembly_fc(x).flatten(2).transpose(1, 2).clone()
            feats[0, layout.sort_idx[0, 0, 0]] += 1.0  # change the features of the query in chunk 0, slot 0
            lss2 = m.learnable_score(feats, layout)
        # the score row of that query, restricted to the keys of the *other* chunks (columns c..3c)
        changed = not torch.allclose(lss[0, 0, 0, 0, 4:], lss2[0, 0, 0, 0, 4:])
        assert changed == depends_on_query


def test_combine_rounds_paper_small_example():
    ret = torch.tensor([[[[1.0], [2.0]]], [[[3.0], [4.0]]]]).permute(1, 0, 2, 3)  # (B=1, R=2, L=2, D=1)
    raw_sum = torch.tensor([[[1.0, 2.0], [3.0, 2.0]]])  # (1, 2, 2)
    out = combine_rounds_paper(ret, raw_sum)
    # p=0: w = (1/4, 3/4) -> 1/4 + 9/4 = 2.5 ; p=1: w = (1/2, 1/2) -> (2 + 4)/2 = 3
    torch.testing.assert_close(out, torch.tensor([[[2.5], [3.0]]]))
    # negative sums are allowed by Eq. (18) (weights outside [0, 1]); an all-zero denominator -> equal weights
    w = paper_round_weights(torch.tensor([[[2.0, 0.0], [-1.0, 0.0]]]))
    torch.testing.assert_close(w, torch.tensor([[[2.0, 0.5], [-1.0, 0.5]]]))


# ----------------------------------------------------------------------------------------------- module behaviour


def test_one_chunk_without_lss_is_dense_attention():
    """L == chunk: the chunk and its two neighbours are the same chunk, so every key appears 3 times and the
    softmax equals dense attention over all positions (any number of rounds)."""
    torch.manual_seed(0)
    m = GLA(n_hashes=3, channels=8, reduction=2, chunk_size=20, res_scale=1.0, lss_variant="none").double()
    x = torch.randn(2, 8, 4, 5, dtype=torch.float64)
    with torch.no_grad():
        y = m(x)
        q = m.conv_match(x).flatten(2).transpose(1, 2)
        v = m.conv_assembly(x).flatten(2).transpose(1, 2)
        dense = torch.softmax(q @ F.normalize(q, dim=-1, eps=5e-5).transpose(1, 2), -1) @ v
    torch.testing.assert_close(y, dense.transpose(1, 2).reshape(2, 8, 4, 5) + x, rtol=1e-10, atol=1e-10)


def test_injectable_randomness_details_and_gradients():
    torch.manual_seed(0)
    m = GLA(n_hashes=2, channels=8, reduction=2, chunk_size=6)
    x = torch.randn(1, 8, 6, 7)
    m.generator = torch.Generator().manual_seed(9)
    a = m(x)
    m.generator = torch.Generator().manual_seed(9)
    m.keep_details = True
    b = m(x)
    assert torch.equal(a, b)
    d = m.details
    n = d["n_buckets"]
    assert n == n_hash_buckets(42, 6) == 8
    assert d["projections"].shape == (4, 2, n) and d["codes"].shape == (1, 2, 42)
    assert d["score"].shape == (1, 2, 7, 6, 18) and d["lss"].shape == (1, 2, 7, 6, 18)
    torch.testing.assert_close(d["round_weights"].sum(1), torch.ones(1, 42))
    m.keep_details = False
    m.projections = d["projections"]  # fixed projections: no generator needed
    torch.testing.assert_close(m(x), b)
    b.sum().backward()
    assert m.fc[2].weight.grad is not None and m.fc[2].weight.grad.abs().sum() > 0  # the LSS is learnable


def test_errors():
    with pytest.raises(ValueError, match="lss_variant"):
        GLA(lss_variant="query")
    with pytest.raises(ValueError, match="round_weights"):
        GLA(round_weights="mean")
    m = GLA(n_hashes=2, channels=8, reduction=2, chunk_size=16)
    assert m(torch.randn(1, 8, 3, 3)).shape == (1, 8, 3, 3)  # smaller than a chunk: one chunk, see docstring
    with pytest.raises(ValueError, match=r"\(B, 8, H, W\)"):
        m(torch.randn(1, 4, 5, 5))
    with pytest.raises(ValueError, match="projections"):
        m(torch.randn(1, 8, 5, 5), projections=torch.randn(4, 2, 3))
