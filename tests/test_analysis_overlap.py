"""srlib.analysis.overlap: overlap rates of attention maps, neighbour recall of bucketings, dense maps of sparse
attention."""

from __future__ import annotations

import pytest
import torch

from srlib.attention.buckets import BucketLayout, bucketed_attention, combine_rounds
from srlib.attention.lcoa import LearnableCollaborativeAttention
from srlib.analysis.buckets import attended_mask
from srlib.analysis.overlap import (
    bucket_recall,
    bucket_share,
    bucketed_to_dense,
    dense_attention_map,
    feature_attention_map,
    layer_overlaps,
    overlap_rate,
    pattern_overlap,
    topk_overlap,
    true_neighbours,
    window_recall,
)


# ---------------------------------------------------------------------------------------------- overlap rates
def test_overlap_rate_exact_values_on_hand_made_rows():
    p = torch.tensor([[0.5, 0.5, 0.0, 0.0],   # vs q: common mass 0.5 (key 1)
                      [0.25, 0.25, 0.25, 0.25],
                      [1.0, 0.0, 0.0, 0.0]], dtype=torch.float64)
    q = torch.tensor([[0.0, 0.5, 0.5, 0.0],
                      [0.25, 0.25, 0.25, 0.25],  # identical -> 1
                      [0.0, 0.0, 0.0, 1.0]], dtype=torch.float64)  # disjoint -> 0
    torch.testing.assert_close(overlap_rate(p, q), torch.tensor([0.5, 1.0, 0.0], dtype=torch.float64))
    # 1 - total variation distance, symmetric
    tv = 0.5 * (p - q).abs().sum(-1)
    torch.testing.assert_close(overlap_rate(q, p), 1 - tv)
    # (B, L, L) maps reduce the key dim only
    assert overlap_rate(p.expand(2, 3, 4), q.expand(2, 3, 4)).shape == (2, 3)


def test_overlap_rate_errors():
    with pytest.raises(ValueError, match="different shapes"):
        overlap_rate(torch.ones(2, 3), torch.ones(3, 2))
    with pytest.raises(ValueError, match="non-negative"):
        overlap_rate(torch.tensor([0.5, -0.5]), torch.tensor([0.5, 0.5]))


def test_topk_overlap_exact_values():
    p = torch.tensor([[0.4, 0.3, 0.2, 0.1, 0.0], [0.1, 0.2, 0.3, 0.4, 0.0]])
    q = torch.tensor([[0.05, 0.35, 0.5, 0.0, 0.1], [0.1, 0.2, 0.3, 0.4, 0.0]])
    # row 0: top2(p) = {0, 1}, top2(q) = {2, 1} -> 1/2 ; top3(p) = {0,1,2}, top3(q) = {2,1,4} -> 2/3
    torch.testing.assert_close(topk_overlap(p, q, 2), torch.tensor([0.5, 1.0]))
    torch.testing.assert_close(topk_overlap(p, q, 3), torch.tensor([2 / 3, 1.0]))
    torch.testing.assert_close(topk_overlap(p, q, 5), torch.tensor([1.0, 1.0]))
    with pytest.raises(ValueError, match=r"k must lie in \[1, 5\]"):
        topk_overlap(p, q, 6)


def test_pattern_overlap_is_jaccard():
    a = torch.tensor([[True, True, False, False], [False, False, False, False], [True, False, True, False]])
    b = torch.tensor([[False, True, True, False], [False, False, False, False], [True, False, True, False]])
    torch.testing.assert_close(pattern_overlap(a, b), torch.tensor([1 / 3, 1.0, 1.0]))
    with pytest.raises(ValueError, match="boolean"):
        pattern_overlap(a.float(), b.float())


def test_layer_overlaps_reference_and_topk():
    ref = torch.tensor([[[0.5, 0.5, 0.0], [0.0, 1.0, 0.0], [0.2, 0.3, 0.5]]])
    same = ref.clone()
    other = torch.tensor([[[0.0, 0.5, 0.5], [0.0, 1.0, 0.0], [0.5, 0.3, 0.2]]])
    res = layer_overlaps({"shallow": ref, "mid": same, "deep": other}, top_k=1)
    assert res["names"] == ["shallow", "mid", "deep"]
    # deep vs shallow: rows overlap 0.5, 1.0, 0.2+0.3+0.2 = 0.7 -> mean 2.2/3
    torch.testing.assert_close(res["overlap"], torch.tensor([1.0, 1.0, 2.2 / 3]))
    assert res["overlap_per_query"].shape == (3, 1, 3)
    # top-1: row 0 tie in ref ({0,1} -> topk picks one); rows 1 agree, row 2 disagree
    assert res["topk"][0] == 1.0 and res["topk"][1] == 1.0
    # reference given by name: the deep layer now scores 1
    assert layer_overlaps([ref, other], reference=1)["overlap"][1] == 1.0
    assert layer_overlaps({"a": ref, "b": other}, reference="b")["overlap"][1] == 1.0
    with pytest.raises(ValueError, match="not among"):
        layer_overlaps({"a": ref}, reference="z")
    with pytest.raises(ValueError, match="shape"):
        layer_overlaps([ref, ref[:, :2]])
    with pytest.raises(ValueError, match="no attention maps"):
        layer_overlaps([])


# ---------------------------------------------------------------------------------------------- dense maps
def test_dense_and_feature_maps_by_hand():
    x = torch.tensor([[[3.0, 4.0], [0.0, 2.0], [1.0, 0.0]]], dtype=torch.float64)  # (1, L=3, C=2)
    keys = x / x.norm(dim=-1, keepdim=True)
    want = torch.softmax(x @ keys.transpose(1, 2), dim=-1)
    torch.testing.assert_close(dense_attention_map(x), want)
    # the same map from a (B, C, H, W) feature map with H*W = 3
    torch.testing.assert_close(dense_attention_map(x.transpose(1, 2).reshape(1, 2, 1, 3)), want)
    cos = keys @ keys.transpose(1, 2)
    torch.testing.assert_close(feature_attention_map(x, temperature=0.5), torch.softmax(cos / 0.5, dim=-1))
    with pytest.raises(ValueError, match="temperature"):
        feature_attention_map(x, temperature=0.0)


@pytest.mark.parametrize("L, chunk, rounds", [(20, 6, 1), (24, 6, 2), (23, 8, 3), (10, 10, 1)])
def test_bucketed_to_dense_reproduces_the_sparse_attention(L, chunk, rounds):
    g = torch.Generator().manual_seed(L + rounds)
    q = torch.randn(2, L, 4, generator=g, dtype=torch.float64)
    v = torch.randn(2, L, 5, generator=g, dtype=torch.float64)
    codes = torch.randint(0, 3, (2, rounds, L), generator=g)
    layout = BucketLayout.from_codes(codes, chunk)
    res = bucketed_attention(q, v, layout, return_score=True)
    dense = bucketed_to_dense(res.score, layout, res.bucket_score)
    assert dense.shape == (2, L, L)
    torch.testing.assert_close(dense.sum(-1), torch.ones(2, L, dtype=torch.float64))
    torch.testing.assert_close(dense @ v, combine_rounds(res.ret, res.bucket_score))
    # the support is the attended pattern (single round: exactly attended_mask)
    if rounds == 1:
        for p in (0, L - 1):
            assert torch.equal(dense[:, p] > 0, attended_mask(layout, p)[:, 0])


def test_bucketed_to_dense_of_an_lcoa_module():
    torch.manual_seed(1)
    m = LearnableCollaborativeAttention(channels=8, reduction=2, n_clusters=3, window_size=8).double().eval()
    x = torch.randn(1, 8, 5, 6, dtype=torch.float64)
    m.keep_details = True
    out, shared = m(x)
    dense = bucketed_to_dense(shared.score, shared.layout)
    v = m.conv_assembly(x).flatten(2).transpose(1, 2)
    y = (dense @ v).transpose(1, 2).reshape_as(x)
    torch.testing.assert_close(m.res_scale * y + x, out)


def test_bucketed_to_dense_errors():
    layout = BucketLayout.from_codes(torch.zeros(1, 2, 8, dtype=torch.long), 4)
    score = torch.full((1, 2, 2, 4, 12), 1 / 12)
    with pytest.raises(ValueError, match="need bucket_score"):
        bucketed_to_dense(score, layout)
    with pytest.raises(ValueError, match=r"score must be \(B, R, n, c, 3c\)"):
        bucketed_to_dense(score[..., :6], layout, torch.zeros(1, 2, 8))


# ---------------------------------------------------------------------------------------------- recall
def test_true_neighbours_by_cosine():
    x = torch.tensor([[[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [-1.0, 0.0], [0.1, 0.9]]])
    nb = true_neighbours(x, 2)
    assert nb.shape == (1, 5, 2)
    assert nb[0, 0].tolist() == [1, 4]
    assert nb[0, 2].tolist() == [4, 1]
    assert nb[0, 3].tolist() == [2, 4]  # cos 0 and -0.11 beat -0.99 and -1
    # without excluding itself, every point is its own nearest neighbour
    assert true_neighbours(x, 1, exclude_self=False)[0, :, 0].tolist() == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match=r"k must lie in \[1, 4\]"):
        true_neighbours(x, 5)


def test_bucket_recall_exact_values():
    neighbours = torch.tensor([[[1, 2], [0, 3], [3, 0], [2, 1]]])  # (1, L=4, k=2)
    codes = torch.tensor([[[0, 0, 1, 1]]])  # one round
    # query 0: nb 1 same, 2 not -> 0.5; query 1: 0 same, 3 not -> .5; query 2: 3 same, 0 not; query 3: 2 same, 1 not
    torch.testing.assert_close(bucket_recall(neighbours, codes), torch.full((1, 4), 0.5))
    # a second round that pairs 0 with 2 and 1 with 3 completes every query
    two = torch.tensor([[[0, 0, 1, 1], [5, 6, 5, 6]]])
    torch.testing.assert_close(bucket_recall(neighbours, two), torch.tensor([[1.0, 1.0, 1.0, 1.0]]))
    with pytest.raises(ValueError, match="neighbours must be integer"):
        bucket_recall(neighbours[:, :3], codes)


def test_window_recall_exact_values():
    # L = 10, windows of 3 -> 4 windows, padding 2 (sorted slots 8, 9 copied into the last window)
    codes = torch.arange(10).view(1, 1, 10)  # identity order: slot = position
    layout = BucketLayout.from_codes(codes, 3)
    assert (layout.n_chunks, layout.padding) == (4, 2)
    # query 0 (window 0) attends windows {0, 3, 1}: positions 0..5 and 9 and the copies of 8, 9 (window 3)
    nb = torch.zeros(1, 10, 4, dtype=torch.long)
    nb[0, 0] = torch.tensor([5, 6, 8, 9])  # 5 (win 1) yes, 6 (win 2) no, 8 (win 2, but copied into win 3) yes, 9 yes
    nb[0, 4] = torch.tensor([0, 8, 9, 1])  # query 4 (window 1): windows {1, 0, 2}: 0 yes, 8 yes (win 2), 9 no, 1 yes
    got = window_recall(nb, layout)
    assert got[0, 0].item() == 0.75 and got[0, 4].item() == 0.75


@pytest.mark.parametrize("L, chunk, rounds", [(20, 6, 1), (24, 6, 2), (23, 8, 2), (10, 10, 1), (17, 5, 3)])
def test_window_recall_agrees_with_attended_mask(L, chunk, rounds):
    g = torch.Generator().manual_seed(7 * L + chunk)
    codes = torch.randint(0, 4, (2, rounds, L), generator=g)
    layout = BucketLayout.from_codes(codes, chunk)
    nb = torch.stack([torch.stack([torch.randperm(L, generator=g)[:5] for _ in range(L)]) for _ in range(2)])
    got = window_recall(nb, layout)
    for b in range(2):
        for p in range(L):
            mask = attended_mask(layout, p)[b].any(0)  # (L,) attended in some round
            assert got[b, p].item() == pytest.approx(mask[nb[b, p]].double().mean().item())


def test_one_window_recalls_everything_and_same_bucket_bounds_window():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 30, 4, generator=g)
    nb = true_neighbours(x, 6)
    one = BucketLayout.from_codes(torch.randint(0, 3, (1, 1, 30), generator=g), 30)
    assert window_recall(nb, one).min().item() == 1.0
    # a bucket no larger than one window: the whole bucket is in the attended windows
    codes = torch.arange(30).view(1, 1, 30) // 5
    assert torch.all(window_recall(nb, BucketLayout.from_codes(codes, 5)) >= bucket_recall(nb, codes))


# ---------------------------------------------------------------------------------------------- hooks
def test_bucket_share_exact_values():
    codes = torch.tensor([[[0, 0, 0, 1, 1]]])  # sizes 3 and 2
    torch.testing.assert_close(bucket_share(codes), torch.tensor([[0.5, 0.5, 0.5, 0.25, 0.25]]))
    # mean = sum n_k (n_k - 1) / (L (L - 1)) = (6 + 2) / 20
    assert bucket_share(codes).mean().item() == pytest.approx(0.4)
    # a second round pairs 0 with 3: their shares grow by one position each
    two = torch.tensor([[[0, 0, 0, 1, 1], [7, 8, 9, 7, 6]]])
    torch.testing.assert_close(bucket_share(two), torch.tensor([[0.75, 0.5, 0.5, 0.5, 0.25]]))
    # the pairwise definition, directly
    g = torch.Generator().manual_seed(5)
    many = torch.randint(0, 3, (2, 3, 11), generator=g)
    same = (many[:, :, :, None] == many[:, :, None, :]).any(1)  # (B, L, L) share a bucket in some round
    torch.testing.assert_close(bucket_share(many), (same.sum(-1) - 1).float() / 10)
    # a random bucketing's recall equals its share on average: here, with all pairs as "neighbours"
    nb = torch.tensor([[[j for j in range(5) if j != i] for i in range(5)]])
    torch.testing.assert_close(bucket_recall(nb, codes), bucket_share(codes))
    with pytest.raises(ValueError, match="L >= 2"):
        bucket_share(torch.zeros(1, 1, 1, dtype=torch.long))


def test_true_neighbours_blocks_do_not_change_the_result():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 37, 5, generator=g)
    full = true_neighbours(x, 4, block=1000)
    assert torch.equal(true_neighbours(x, 4, block=5), full)
    assert not (full == torch.arange(37).view(1, 37, 1)).any()  # never itself
