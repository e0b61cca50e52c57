"""Helpers for looking at trained ENLCN / DLSN attention (notebooks 02 and 03, section "trained small ..."):
srlib.analysis.enla (unit embeddings, attention rows, amplification sweep), srlib.viz.buckets
(bucket balance, bucket-size and bucket-map plots) and srlib.analysis.hashing (neighbour recall of buckets)."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch.testing import assert_close  # noqa: E402

from srlib.attention.buckets import BucketLayout  # noqa: E402
from srlib.attention.enla import ENLCA, enla, gaussian_orthogonal_matrix  # noqa: E402
from srlib.analysis.enla import (  # noqa: E402
    amplification_sweep,
    attention_rows,
    enla_attention_row,
    enlca_unit_embeddings,
    exact_attention_row,
)
from srlib.attention.gla import GlobalLearnableAttention  # noqa: E402
from srlib.analysis.buckets import attended_mask, bucket_balance  # noqa: E402
from srlib.viz.buckets import plot_bucket_maps, plot_bucket_sizes  # noqa: E402
from srlib.analysis.hashing import bucket_neighbour_recall  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


# ------------------------------------------------------------------------------------------- ENLCA / ENLA


def test_enlca_unit_embeddings_undo_the_amplification():
    g = torch.Generator().manual_seed(0)
    block = ENLCA(channel=16, reduction=4, amplification=6.0, generator=g).eval()
    x = torch.randn(1, 16, 5, 7, generator=g)
    q, k = enlca_unit_embeddings(block, x)
    assert q.shape == k.shape == (1, 35, 4)
    assert_close(q.norm(dim=-1), torch.ones(1, 35))
    q6, k6, _ = block.embed(x)
    assert_close(q * math.sqrt(6), q6)
    assert_close(k * math.sqrt(6), k6)
    # exact scores at amplification a are a * cos
    assert_close((q[0] * 3) @ k[0].T, 3 * F.cosine_similarity(q[0, :, None], k[0, None], dim=-1), atol=1e-5, rtol=1e-5)


def test_enlca_unit_embeddings_errors():
    with pytest.raises(ValueError, match="ENLCA"):
        enlca_unit_embeddings(torch.nn.Conv2d(4, 4, 1), torch.zeros(1, 4, 3, 3))
    block = ENLCA(channel=16, reduction=4)
    with pytest.raises(ValueError, match="16"):
        enlca_unit_embeddings(block, torch.zeros(1, 8, 3, 3))


def test_attention_rows_match_full_matrices():
    """Against independent full matrices: softmax(q k^T) (Eq. 1) and ENLA with identity values (Eqs. 4-6)."""
    g = torch.Generator().manual_seed(1)
    q = F.normalize(torch.randn(2, 30, 6, generator=g, dtype=torch.float64), dim=-1) * 2
    k = F.normalize(torch.randn(2, 25, 6, generator=g, dtype=torch.float64), dim=-1) * 2
    proj = gaussian_orthogonal_matrix(16, 6, generator=g, dtype=torch.float64)
    idx = [0, 7, 29]
    exact = attention_rows(q, k, idx)
    approx = attention_rows(q, k, torch.tensor(idx), proj, eps=1e-4)
    assert exact.shape == approx.shape == (2, 3, 25)
    full_exact = torch.softmax(q @ k.transpose(1, 2), dim=-1)  # (2, 30, 25)
    full_enla = enla(q, k, torch.eye(25, dtype=torch.float64).expand(2, 25, 25), proj)  # rows of D^-1 phi(Q) phi(K)^T
    assert_close(exact, full_exact[:, idx])
    assert_close(approx, full_enla[:, idx])
    for j, i in enumerate(idx):  # the single-row functions are rows of the same
        assert_close(exact[:, j], exact_attention_row(q, k, i))
        assert_close(approx[:, j], enla_attention_row(q, k, i, proj, eps=1e-4))
    assert_close(exact.sum(-1), torch.ones(2, 3, dtype=torch.float64))
    assert_close(approx.sum(-1), torch.ones(2, 3, dtype=torch.float64))
    assert attention_rows(q, k).shape == (2, 30, 25)  # default: every query


def test_attention_rows_errors():
    q, k = torch.zeros(10, 4), torch.zeros(8, 4)
    with pytest.raises(ValueError, match=r"\[0, 10\)"):
        attention_rows(q, k, [10])
    with pytest.raises(ValueError, match=r"\[0, 10\)"):
        attention_rows(q, k, [])
    with pytest.raises(ValueError, match="must be"):
        attention_rows(q, torch.zeros(8, 3))
    with pytest.raises(ValueError, match="dimension"):
        attention_rows(q, k, [0], torch.zeros(16, 3))


def test_amplification_sweep_by_hand():
    """Query e1 against keys e1, e2, -e1, -e2: weights ∝ [e^a, 1, e^-a, 1]. Keys for 90%: a = 1 -> shares
    0.534, 0.197, 0.197, 0.072 -> 3 keys; a = 2 -> 0.776, 0.105, 0.105, 0.014 -> 3 keys; a = 4 -> 0.964 -> 1."""
    keys = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]], dtype=torch.float64)
    sw = amplification_sweep(keys, keys, [1, 2, 4], queries=[0])
    assert sw.keys_exact.tolist() == [3.0, 3.0, 1.0]
    assert sw.keys_enla is None and sw.tv is None
    assert (sw.n_keys, sw.n_queries, sw.mass) == (4, 1, 0.9)
    assert_close(sw.amplifications, torch.tensor([1.0, 2.0, 4.0], dtype=torch.float64))
    # the shares themselves, for a = 1
    w = attention_rows(keys, keys, [0])[0]
    e = math.e
    assert_close(w, torch.tensor([e, 1, 1 / e, 1], dtype=torch.float64) / (e + 2 + 1 / e))


def test_amplification_sweep_trade_off_on_random_directions():
    """Key counts never grow with a; ENLA's TV equals the distance of the two row sets; it grows with a
    (Eq. 7) for a fixed F."""
    g = torch.Generator().manual_seed(2)
    q = F.normalize(torch.randn(1, 200, 8, generator=g, dtype=torch.float64), dim=-1)
    k = F.normalize(torch.randn(1, 200, 8, generator=g, dtype=torch.float64), dim=-1)
    proj = gaussian_orthogonal_matrix(128, 8, generator=g, dtype=torch.float64)
    amps = [0.5, 1.0, 4.0, 12.0]
    sw = amplification_sweep(q, k, amps, torch.arange(0, 200, 4), proj)
    assert (sw.keys_exact.diff() <= 0).all() and sw.keys_exact[-1] < sw.keys_exact[0]
    assert sw.n_queries == 50 and sw.n_keys == 200
    s = math.sqrt(4.0)
    ex = attention_rows(q * s, k * s, torch.arange(0, 200, 4))
    ap = attention_rows(q * s, k * s, torch.arange(0, 200, 4), proj)
    assert_close(sw.tv[2], 0.5 * (ap - ex).abs().sum(-1).mean())
    assert sw.tv[0] < 0.1 < sw.tv[-1] and (sw.tv.diff() > 0).all()


def test_amplification_sweep_errors():
    q = torch.zeros(4, 2)
    with pytest.raises(ValueError, match="positive"):
        amplification_sweep(q, q, [1.0, 0.0])
    with pytest.raises(ValueError, match="positive"):
        amplification_sweep(q, q, [])
    with pytest.raises(ValueError, match="mass"):
        amplification_sweep(q, q, [1.0], mass=1.5)
    with pytest.raises(ValueError, match="must be"):
        amplification_sweep(torch.zeros(2, 4, 2), q, [1.0])


# ------------------------------------------------------------------------------------------- buckets


def test_bucket_balance_by_hand():
    codes = torch.tensor([[0, 0, 0, 1, 1, 2], [3, 3, 3, 3, 3, 3]])
    bal = bucket_balance(codes, 4)
    assert bal["sizes"].tolist() == [[3, 2, 1, 0], [0, 0, 0, 6]]
    assert bal["occupied"].tolist() == [3, 1]
    assert_close(bal["largest_share"], torch.tensor([0.5, 1.0], dtype=torch.float64))
    h = -(0.5 * math.log(0.5) + (1 / 3) * math.log(1 / 3) + (1 / 6) * math.log(1 / 6))
    assert_close(bal["effective"], torch.tensor([math.exp(h), 1.0], dtype=torch.float64))
    even = bucket_balance(torch.arange(40).remainder(8).view(1, 1, 40), 8)  # (B, R, L): 5 positions per bucket
    assert even["sizes"].shape == (1, 1, 8)
    assert_close(even["effective"], torch.tensor([[8.0]], dtype=torch.float64))


def test_bucket_balance_errors():
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        bucket_balance(torch.tensor([[0, 4]]), 4)
    with pytest.raises(ValueError, match="integer"):
        bucket_balance(torch.zeros(2, 3), 4)
    with pytest.raises(ValueError, match="integer"):
        bucket_balance(torch.zeros(3, dtype=torch.long), 4)


def test_plot_bucket_sizes_draws_sorted_shares():
    sizes = {"a": torch.tensor([[1, 5, 0, 2]]), "b": torch.tensor([2, 2, 2, 2])}
    ax = plot_bucket_sizes(sizes)
    lines = ax.get_lines()
    assert len(lines) == 3  # two settings and the even share
    assert_close(torch.as_tensor(lines[0].get_ydata()), torch.tensor([5, 2, 1, 0], dtype=torch.float64) / 8)
    assert_close(torch.as_tensor(lines[1].get_ydata()), torch.full((4,), 0.25, dtype=torch.float64))
    assert lines[2].get_ydata()[0] == pytest.approx(0.25)
    with pytest.raises(ValueError, match="at least one"):
        plot_bucket_sizes({})
    with pytest.raises(ValueError, match="positive total"):
        plot_bucket_sizes({"z": torch.zeros(4)})


def test_plot_bucket_maps_panels_and_titles():
    image = torch.rand(3, 8, 12)
    fig = plot_bucket_maps(image, {"one": torch.zeros(24, dtype=torch.long),
                                   "two": torch.arange(24) % 3}, (4, 6), n_buckets=4)
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["image", "one: 1 buckets", "two: 3 buckets"]
    with pytest.raises(ValueError, match="one round"):
        plot_bucket_maps(image, {"x": torch.zeros(2, 24, dtype=torch.long)}, (4, 6))
    with pytest.raises(ValueError, match="at least one"):
        plot_bucket_maps(image, {})


# ------------------------------------------------------------------------------------------- neighbour recall


def _brute_force_recall(details, k, queries):
    """Independent path: loop over queries and rounds, with attended_mask for the reachable keys."""
    emb = details["embedding"][0].double()
    codes = details["codes"][0]
    R, L = codes.shape
    same, any_round, reach, chance_same, chance_reach = [], [], [], [], []
    for i in queries:
        s = torch.tensor([float(emb[i] @ (emb[j] / emb[j].norm().clamp_min(5e-5))) if j != i else -math.inf
                          for j in range(L)], dtype=torch.float64)
        top = torch.sort(s, descending=True, stable=True).indices[:k].tolist()
        per_round = [[int(codes[r, j] == codes[r, i]) for j in top] for r in range(R)]
        same.append(sum(map(sum, per_round)) / (R * k))
        any_round.append(sum(max(per_round[r][t] for r in range(R)) for t in range(k)) / k)
        mask = attended_mask(details["layout"], i)[0].any(0)
        mask[i] = False
        reach.append(sum(bool(mask[j]) for j in top) / k)
        chance_same.append(sum(int((codes[r] == codes[r, i]).sum()) - 1 for r in range(R)) / (R * (L - 1)))
        chance_reach.append(int(mask.sum()) / (L - 1))
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    return {"same_bucket": mean(same), "same_bucket_any": mean(any_round), "reachable": mean(reach),
            "chance_same": mean(chance_same), "chance_reachable": mean(chance_reach)}


def test_bucket_neighbour_recall_by_hand():
    """Two clusters of 6 (directions e1, e2), buckets = clusters, chunks of 2 (6 chunks, sorted order =
    position order). Query 0 sees chunks 0, 5, 1 = positions {1, 2, 3, 10, 11}; its 5 best keys are 1..5,
    of which 1, 2, 3 are reachable."""
    L = 12
    emb = torch.zeros(1, L, 2, dtype=torch.float64)
    emb[0, :6, 0] = torch.linspace(1, 2, 6)
    emb[0, 6:, 1] = torch.linspace(1, 2, 6)
    codes = torch.tensor([[[0] * 6 + [1] * 6]])
    details = {"embedding": emb, "codes": codes, "layout": BucketLayout.from_codes(codes, 2)}
    r0 = bucket_neighbour_recall(details, 5, [0])
    assert r0["same_bucket"] == 1.0 and r0["same_bucket_any"] == 1.0
    assert r0["reachable"] == pytest.approx(3 / 5)
    assert r0["chance_same"] == pytest.approx(5 / 11) and r0["chance_reachable"] == pytest.approx(5 / 11)
    assert r0["n_queries"] == 1
    everyone = bucket_neighbour_recall(details, 5)
    assert everyone["n_queries"] == L and everyone["same_bucket"] == 1.0
    # one bucket for all: everything shares it, chance is 1
    one = {"embedding": emb, "codes": torch.zeros(1, 1, L, dtype=torch.long),
           "layout": BucketLayout.from_codes(torch.zeros(1, 1, L, dtype=torch.long), 2)}
    assert bucket_neighbour_recall(one, 3)["chance_same"] == 1.0


def test_bucket_neighbour_recall_agrees_with_a_brute_force_loop():
    g = torch.Generator().manual_seed(3)
    L, R = 40, 3
    emb = torch.randn(1, L, 4, generator=g, dtype=torch.float64).relu()
    codes = torch.randint(0, 5, (1, R, L), generator=g)
    details = {"embedding": emb, "codes": codes, "layout": BucketLayout.from_codes(codes, 6)}  # padded
    queries = [0, 5, 17, 39]
    got = bucket_neighbour_recall(details, 4, queries)
    want = _brute_force_recall(details, 4, queries)
    for key, value in want.items():
        assert got[key] == pytest.approx(value, abs=1e-12), key


def test_bucket_neighbour_recall_on_gla_details():
    _ = torch.manual_seed(4)
    gla = GlobalLearnableAttention(n_hashes=2, channels=8, reduction=2, chunk_size=10).eval()
    gla.keep_details = True
    gla.generator = torch.Generator().manual_seed(5)
    with torch.no_grad():
        gla(torch.randn(1, 8, 6, 9))
    queries = list(range(0, 54, 5))
    got = bucket_neighbour_recall(gla.details, 5, queries)
    want = _brute_force_recall(gla.details, 5, queries)
    for key, value in want.items():
        assert got[key] == pytest.approx(value, abs=1e-9), key
    assert got["same_bucket"] <= got["same_bucket_any"] <= 1


def test_bucket_neighbour_recall_errors():
    emb = torch.rand(1, 6, 2)
    codes = torch.zeros(1, 1, 6, dtype=torch.long)
    details = {"embedding": emb, "codes": codes, "layout": BucketLayout.from_codes(codes, 2)}
    with pytest.raises(ValueError, match="keep_details"):
        bucket_neighbour_recall({"codes": codes}, 2)
    with pytest.raises(ValueError, match=r"k must be in \[1, 6\)"):
        bucket_neighbour_recall(details, 6)
    with pytest.raises(ValueError, match=r"\[0, 6\)"):
        bucket_neighbour_recall(details, 2, [6])
    with pytest.raises(ValueError, match="batch"):
        bucket_neighbour_recall(details, 2, batch=1)


# ------------------------------------------------------------------------------------------- shipped weights


@pytest.fixture(scope="module")
def chelsea_crop():
    from srlib.data import SampleImagesDataset

    return SampleImagesDataset(2, names=("chelsea",))[0]["lr"][:, 10:42, 64:112]  # (3, 32, 48), offline


def test_trained_enlcn_is_more_concentrated_than_untrained(chelsea_crop):
    """What notebook 02 section 7 reports, on a bundled image: at k = 6 the shipped ENLCN's exact attention
    needs fewer keys for 90% of the weight than the untrained network's, in both ENLCA; key counts fall with k."""
    from srlib.pretrained import build_small, pretrained
    from srlib.viz.explorer import collect_attention_layers

    trained = pretrained("enlcn-small-x2")
    _ = torch.manual_seed(0)
    untrained = build_small("enlcn").eval()
    sub = torch.arange(0, 32 * 48, 6)
    counts = {}
    for name, net in (("trained", trained), ("untrained", untrained)):
        for i, (mod, feats) in enumerate(collect_attention_layers(net, chelsea_crop[None])["ENLA"]):
            q, k = enlca_unit_embeddings(mod, feats)
            sw = amplification_sweep(q, k, [1.0, 6.0, 20.0], sub, mod.attn_fn.projection_matrix)
            assert (sw.keys_exact.diff() <= 0).all() and ((sw.tv >= 0) & (sw.tv <= 1)).all()
            counts[name, i] = float(sw.keys_exact[1])
    assert counts["trained", 0] < counts["untrained", 0] and counts["trained", 1] < counts["untrained", 1]


def test_trained_dlsn_buckets_group_neighbours_above_chance(chelsea_crop):
    """What notebook 03 section 4 reports: the buckets collapse (far fewer than b occupied) yet hold a query's
    best keys well above chance."""
    from srlib.pretrained import pretrained
    from srlib.viz.explorer import collect_attention_layers, prepare_attention

    trained = pretrained("dlsn-small-x2")
    mod, feats = collect_attention_layers(trained, chelsea_crop[None])["GLA"][-1]
    details = prepare_attention("GLA", feats, mod, seed=0).details
    L, n_b = 32 * 48, details["n_buckets"]
    assert n_b == 32  # 1536 positions / chunks of 48
    bal = bucket_balance(details["codes"][0], n_b)
    assert (bal["sizes"].sum(-1) == L).all() and (bal["occupied"] < n_b).all()
    rec = bucket_neighbour_recall(details, 16, torch.arange(0, L, 7))
    assert rec["same_bucket"] > rec["chance_same"] and rec["reachable"] > 2 * rec["chance_reachable"]
