"""The shared bucket machinery: sort / chunk / look-around / un-sort / round combination."""

import pytest
import torch

from srlib.attention.buckets import (
    BucketLayout,
    apply_shared_attention,
    bucketed_attention,
    combine_rounds,
    look_around,
    look_around_at,
    n_hash_buckets,
)
import srlib.attention.blocking as blocking_module
from srlib.attention.nla import non_local_attention


def _dense_reference(q, v):
    """Dense attention with the official NLSA similarity: raw = q_i . q_j / |q_j| (keys normalised)."""
    k = torch.nn.functional.normalize(q, dim=-1, eps=5e-5)
    return non_local_attention(q, k, v, lambda s: torch.softmax(s, -1))


def test_n_hash_buckets_matches_official_formula():
    assert n_hash_buckets(342, 16) == 22  # nlsa_case1: 21 chunks -> rounded up to even
    assert n_hash_buckets(400, 48) == 8  # nlsn_case1
    assert n_hash_buckets(100 * 100, 16) == 128  # capped
    with pytest.raises(ValueError, match="chunk_size = 144"):
        n_hash_buckets(100, 144)


def test_stable_sort_keeps_position_order_inside_a_bucket():
    codes = torch.tensor([[[1, 0, 1, 0, 1, 0]]])
    layout = BucketLayout.from_codes(codes, chunk_size=3)
    assert layout.sort_idx.tolist() == [[[1, 3, 5, 0, 2, 4]]]
    assert layout.undo_idx.tolist() == [[[3, 0, 4, 1, 5, 2]]]


def test_padding_duplicates_last_sorted_rows():
    L, c = 10, 4
    codes = torch.arange(L).flip(0).view(1, 1, L)  # sorted order = positions 9, 8, ..., 0
    x = torch.arange(L, dtype=torch.float64).view(1, L, 1)
    layout = BucketLayout.from_codes(codes, c)
    assert layout.padding == 2 and layout.n_chunks == 3
    chunks = layout.to_chunks(x)
    assert chunks.shape == (1, 1, 3, 4, 1)
    assert chunks.flatten().tolist() == [9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 1, 0]


def test_roundtrip_to_and_from_chunks():
    g = torch.Generator().manual_seed(1)
    B, R, L, D = 2, 3, 37, 5
    codes = torch.randint(0, 6, (B, R, L), generator=g)
    x = torch.randn(B, R, L, D, generator=g)
    layout = BucketLayout.from_codes(codes, 8)
    torch.testing.assert_close(layout.from_chunks(layout.to_chunks(x)), x, rtol=0, atol=0)


def test_look_around_order_is_own_prev_next_cyclic():
    x = torch.arange(3, dtype=torch.float64).view(1, 1, 3, 1, 1)  # chunk i holds value i
    y = look_around(x)
    assert y.shape == (1, 1, 3, 3, 1)
    assert y[0, 0, :, :, 0].tolist() == [[0, 2, 1], [1, 0, 2], [2, 1, 0]]


@pytest.mark.parametrize("L, chunk", [(24, 24), (24, 8), (30, 10)])
def test_degenerate_cases_equal_dense_attention(L, chunk):
    """One chunk (keys = the chunk three times) or three chunks (own + both neighbours = everything):
    every query sees every key exactly in proportion, so the result is dense attention, whatever the codes."""
    g = torch.Generator().manual_seed(0)
    q = torch.randn(2, L, 6, generator=g, dtype=torch.float64)
    v = torch.randn(2, L, 4, generator=g, dtype=torch.float64)
    codes = torch.randint(0, 4, (2, 1, L), generator=g)
    res = bucketed_attention(q, v, BucketLayout.from_codes(codes, chunk))
    out = combine_rounds(res.ret, res.bucket_score)
    torch.testing.assert_close(out, _dense_reference(q, v), rtol=1e-12, atol=1e-12)


def test_rounds_with_equal_layouts_combine_to_one_round():
    g = torch.Generator().manual_seed(2)
    q = torch.randn(1, 40, 4, generator=g, dtype=torch.float64)
    v = torch.randn(1, 40, 3, generator=g, dtype=torch.float64)
    codes1 = torch.randint(0, 5, (1, 1, 40), generator=g)
    one = bucketed_attention(q, v, BucketLayout.from_codes(codes1, 8))
    three = bucketed_attention(q, v, BucketLayout.from_codes(codes1.repeat(1, 3, 1), 8))
    torch.testing.assert_close(combine_rounds(three.ret, three.bucket_score), one.ret[:, 0], rtol=1e-12, atol=1e-12)


def test_combine_rounds_weights_by_softmax_of_bucket_scores():
    ret = torch.tensor([[[[1.0]], [[3.0]]]])  # (B=1, R=2, L=1, D=1)
    bucket_score = torch.tensor([[[0.0], [torch.log(torch.tensor(3.0))]]])  # weights 1/4, 3/4
    assert combine_rounds(ret, bucket_score).item() == pytest.approx(0.25 * 1 + 0.75 * 3)


def test_shared_attention_reproduces_the_computing_pass():
    g = torch.Generator().manual_seed(3)
    q = torch.randn(1, 50, 4, generator=g, dtype=torch.float64)
    v = torch.randn(1, 50, 6, generator=g, dtype=torch.float64)
    layout = BucketLayout.from_codes(torch.randint(0, 4, (1, 2, 50), generator=g), 16)
    res = bucketed_attention(q, v, layout, return_score=True)
    assert res.score.shape == (1, 2, 4, 16, 48)
    torch.testing.assert_close(res.score.sum(-1), torch.ones(1, 2, 4, 16, dtype=torch.float64))
    torch.testing.assert_close(apply_shared_attention(res.score, v, layout), res.ret, rtol=1e-12, atol=1e-12)


def test_score_bias_is_added_before_the_softmax():
    g = torch.Generator().manual_seed(4)
    q = torch.randn(1, 16, 4, generator=g, dtype=torch.float64)
    v = torch.randn(1, 16, 2, generator=g, dtype=torch.float64)
    layout = BucketLayout.from_codes(torch.zeros(1, 1, 16, dtype=torch.long), 8)
    # A huge bias on key slot 0 of every chunk row makes every query copy that key's value.
    bias = torch.zeros(1, 1, 2, 8, 24, dtype=torch.float64)
    bias[..., 0] = 1e4
    res = bucketed_attention(q, v, layout, score_bias=lambda lay: bias)
    torch.testing.assert_close(res.ret[0, 0, :8], v[0, :1].expand(8, 2))
    torch.testing.assert_close(res.ret[0, 0, 8:], v[0, 8:9].expand(8, 2))


def test_gradients_flow_through_sort_and_chunk():
    g = torch.Generator().manual_seed(5)
    q = torch.randn(1, 12, 3, generator=g, dtype=torch.float64, requires_grad=True)
    v = torch.randn(1, 12, 2, generator=g, dtype=torch.float64, requires_grad=True)
    layout = BucketLayout.from_codes(torch.randint(0, 3, (1, 2, 12), generator=g), 4)

    def f(q, v):
        res = bucketed_attention(q, v, layout)
        return combine_rounds(res.ret, res.bucket_score)

    assert torch.autograd.gradcheck(f, (q, v))


def test_bad_codes_raise():
    with pytest.raises(ValueError, match="integer"):
        BucketLayout.from_codes(torch.zeros(1, 1, 8), 4)
    with pytest.raises(ValueError, match="chunk_size"):
        BucketLayout.from_codes(torch.zeros(1, 1, 8, dtype=torch.long), 0)
    with pytest.raises(ValueError, match="at least one position"):
        BucketLayout.from_codes(torch.zeros(1, 1, 0, dtype=torch.long), 16)


def test_padding_longer_than_the_sequence_repeats_it_cyclically():
    codes = torch.tensor([[[2, 0, 1, 0, 2]]])  # sorted order: positions 1, 3, 2, 0, 4
    layout = BucketLayout.from_codes(codes, 16)
    assert layout.padding == 11 and layout.n_chunks == 1
    x = torch.arange(5, dtype=torch.float64).view(1, 5, 1)
    slots = layout.to_chunks(x).flatten().tolist()
    # slot 5 + t copies sorted slot (5 - 11 + t) mod 5: the last 11 rows of the sorted order repeated
    assert slots == [1, 3, 2, 0, 4] + [4] + [1, 3, 2, 0, 4] * 2
    assert torch.equal(layout.from_chunks(layout.to_chunks(x)), x.unsqueeze(1))


# --------------------------------------------------------------------------------------- blocked inference path
def test_look_around_at_is_a_slice_of_look_around():
    x = torch.arange(2 * 3 * 7 * 4 * 2, dtype=torch.float64).view(2, 3, 7, 4, 2)
    full = look_around(x)
    for start, stop in ((0, 7), (0, 1), (3, 5), (6, 7), (2, 3)):
        assert torch.equal(look_around_at(x, start, stop), full[:, :, start:stop])
    one = x[:, :, :1]  # a single chunk is its own neighbour
    assert torch.equal(look_around_at(one, 0, 1), look_around(one))
    with pytest.raises(ValueError, match="chunk range"):
        look_around_at(x, 3, 3)
    with pytest.raises(ValueError, match="chunk range"):
        look_around_at(x, 5, 8)


@pytest.mark.parametrize("budget", [1, 4000, 2**18])  # bytes: one chunk per block, a few, everything at once
@pytest.mark.parametrize("bias_kind", [None, "full", "at", "key"])
@pytest.mark.parametrize("return_score", [False, True])
def test_blocked_inference_equals_single_pass(budget, bias_kind, return_score, monkeypatch):
    """Under no_grad the chunks go in blocks; the result equals the single pass of the official computation."""
    monkeypatch.setattr(blocking_module, "_budgets", {"cpu": budget})
    g = torch.Generator().manual_seed(6)
    q = torch.randn(2, 61, 5, generator=g, dtype=torch.float64)
    v = torch.randn(2, 61, 3, generator=g, dtype=torch.float64)
    layout = BucketLayout.from_codes(torch.randint(0, 5, (2, 3, 61), generator=g), 8)  # 8 chunks, 3 padded rows
    bias = torch.randn(2, 3, 8, 8, 24, generator=g, dtype=torch.float64)
    kwargs = {}
    if bias_kind == "full":
        kwargs["score_bias"] = lambda lay: bias
    elif bias_kind == "at":
        kwargs["score_bias"] = lambda lay: bias
        kwargs["score_bias_at"] = lambda lay, n0, n1: bias[:, :, n0:n1]
    elif bias_kind == "key":
        kwargs["key_bias"] = torch.randn(2, 3, 8, 8, 8, generator=g, dtype=torch.float64)
    single = bucketed_attention(q, v, layout, single_pass=True, return_score=True, **kwargs)
    with torch.no_grad():
        blocked = bucketed_attention(q, v, layout, return_score=return_score, **kwargs)
    torch.testing.assert_close(blocked.ret, single.ret, rtol=0, atol=1e-13)
    torch.testing.assert_close(blocked.bucket_score, single.bucket_score, rtol=0, atol=1e-13)
    if return_score:
        torch.testing.assert_close(blocked.score, single.score, rtol=0, atol=1e-13)
        torch.testing.assert_close(blocked.bucket_score_sorted, single.bucket_score_sorted, rtol=0, atol=1e-13)
    else:
        assert blocked.score is None and blocked.bucket_score_sorted is None


def test_key_bias_is_the_looked_around_rows_transposed():
    """key_bias[..., j, i] of the chunk key j comes from is the bias of query slot i for key j."""
    g = torch.Generator().manual_seed(10)
    q = torch.randn(1, 24, 3, generator=g, dtype=torch.float64)
    layout = BucketLayout.from_codes(torch.randint(0, 3, (1, 2, 24), generator=g), 6)
    key_bias = torch.randn(1, 2, 4, 6, 6, generator=g, dtype=torch.float64)
    want = look_around(key_bias).transpose(-1, -2)  # (1, 2, 4, 6, 18)
    a = bucketed_attention(q, q, layout, key_bias=key_bias)
    b = bucketed_attention(q, q, layout, score_bias=lambda lay: want)
    torch.testing.assert_close(a.ret, b.ret, rtol=0, atol=1e-13)
    torch.testing.assert_close(a.bucket_score, b.bucket_score, rtol=0, atol=1e-13)
    with pytest.raises(ValueError, match=r"key_bias must be \(B, R, n, c, c\) = \(1, 2, 4, 6, 6\).*\(1, 2, 4, 6, 18\)"):
        bucketed_attention(q, q, layout, key_bias=want)  # the per-query term is not a key bias


@pytest.mark.parametrize("signed", [True, False])
def test_argmax_hash_blocks_equal_the_explicit_argmax(signed):
    """argmax_hash works on blocks of positions and never builds [xR, -xR]: same codes, ties included."""
    from srlib.attention.hashing import argmax_hash

    g = torch.Generator().manual_seed(7)
    x = torch.randn(2, 3000, 4, generator=g, dtype=torch.float64)  # several blocks of positions
    x[0, :5] = 0.0  # all projections 0: ties everywhere, the first direction wins
    proj = torch.randn(4, 3, 6, generator=g, dtype=torch.float64)
    p = torch.einsum("blc,crm->brlm", x, proj)
    want = (torch.cat([p, -p], dim=-1) if signed else p).argmax(dim=-1)
    got = argmax_hash(x, proj, signed=signed)
    assert got.dtype == torch.long and torch.equal(got, want)
    assert (got[0, :, :5] == 0).all()


@pytest.mark.parametrize("budget", [1, 2**30])  # bytes: one chunk per block, a single pass
def test_shared_attention_blocks_equal_the_explicit_product(budget, monkeypatch):
    """apply_shared_attention (blocked forward and backward) equals w . look_around(v) written out, values
    and gradients of the weights and the values (float64, gradcheck too)."""
    monkeypatch.setattr(blocking_module, "_budgets", {"cpu": budget})
    g = torch.Generator().manual_seed(8)
    q = torch.randn(2, 45, 4, generator=g, dtype=torch.float64)
    v = torch.randn(2, 45, 3, generator=g, dtype=torch.float64, requires_grad=True)
    layout = BucketLayout.from_codes(torch.randint(0, 4, (2, 2, 45), generator=g), 8)
    score = bucketed_attention(q, q, layout, single_pass=True, return_score=True).score.requires_grad_()
    wr = torch.randn(2, 2, 45, 3, generator=g, dtype=torch.float64)

    def explicit(score, v):
        return layout.from_chunks(torch.einsum("brnck,brnkd->brncd", score, look_around(layout.to_chunks(v))))

    got, want = apply_shared_attention(score, v, layout), explicit(score, v)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-14)
    with torch.no_grad():
        torch.testing.assert_close(apply_shared_attention(score, v, layout), want, rtol=0, atol=1e-14)
    for a, b in zip(torch.autograd.grad((got * wr).sum(), (score, v)), torch.autograd.grad((want * wr).sum(), (score, v))):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-13)
    if budget == 1:
        assert torch.autograd.gradcheck(lambda s, x: apply_shared_attention(s, x, layout), (score, v), fast_mode=True)


@pytest.mark.parametrize("budget", [1, 30_000, 2**30])  # bytes: one chunk per block, a few, a single pass
@pytest.mark.parametrize("bias_kind", [None, "full", "key"])
@pytest.mark.parametrize("return_score", [False, True])
def test_training_path_blocks_equal_the_single_pass(budget, bias_kind, return_score, monkeypatch):
    """The training path (_ChunkAttention: blocked forward; backward recomputing the scores, or reading the
    kept weights and taking their gradient from later users) gives the same outputs and gradients as the
    single pass that keeps every intermediate (float64, gradcheck too)."""
    monkeypatch.setattr(blocking_module, "_budgets", {"cpu": budget})
    g = torch.Generator().manual_seed(9)
    q = torch.randn(2, 45, 4, generator=g, dtype=torch.float64, requires_grad=True)
    v = torch.randn(2, 45, 3, generator=g, dtype=torch.float64, requires_grad=True)
    layout = BucketLayout.from_codes(torch.randint(0, 4, (2, 2, 45), generator=g), 8)  # 6 chunks, 3 padded
    bias = {"full": torch.randn(2, 2, 6, 8, 24, generator=g, dtype=torch.float64, requires_grad=True),
            "key": torch.randn(2, 2, 6, 8, 8, generator=g, dtype=torch.float64, requires_grad=True)}.get(bias_kind)
    wr = torch.randn(2, 2, 45, 3, generator=g, dtype=torch.float64)
    ws = torch.randn(2, 2, 45, generator=g, dtype=torch.float64)
    wv = torch.randn(2, 45, 3, generator=g, dtype=torch.float64)  # values of a later (collaborative) user
    inputs = (q, v) if bias is None else (q, v, bias)

    def run(q, v, b=None, **kw):
        if bias_kind == "full":
            kw["score_bias"] = lambda lay: b
        elif bias_kind == "key":
            kw["key_bias"] = b
        res = bucketed_attention(q, v, layout, return_score=return_score, **kw)
        loss = (res.ret * wr).sum() + (res.bucket_score * ws).sum()
        if return_score:  # a later module reuses the weights and the sorted bucket scores (LCoA's CoA)
            loss = loss + apply_shared_attention(res.score, wv, layout).square().sum()
            loss = loss + res.bucket_score_sorted.sin().sum()
        return res, loss

    blocked, loss_b = run(*inputs)
    single, loss_s = run(*inputs, single_pass=True)
    assert (blocked.score is None) == (not return_score)
    torch.testing.assert_close(blocked.ret, single.ret, rtol=0, atol=1e-13)
    torch.testing.assert_close(blocked.bucket_score, single.bucket_score, rtol=0, atol=1e-13)
    for a, b in zip(torch.autograd.grad(loss_b, inputs), torch.autograd.grad(loss_s, inputs)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    if budget == 30_000:
        assert torch.autograd.gradcheck(lambda *t: run(*t)[1], inputs, eps=1e-6, atol=1e-7, fast_mode=True)
