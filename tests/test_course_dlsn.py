"""srlib.course_dlsn: the measurements of notebook 03 (Fig. 1 detail fit, chunk scores, Fig. 4 statistics)."""

import math

import pytest
import torch

from srlib.attention.gla import GlobalLearnableAttention
from srlib.course_dlsn import bucket_summary, chunk_scores, detail_fit_summary, seed_hashing, top_attended_stats
from srlib.models import build_model


def test_detail_fit_summary_on_known_sets():
    # 2 queries, 6 keys: similarity ranks keys 0,1,2 highest; fit ranks 2,3,4 highest (query 0) and 0,1,2 (query 1)
    sim = torch.tensor([[0.9, 0.8, 0.7, 0.1, 0.2, 0.3], [0.9, 0.8, 0.7, 0.1, 0.2, 0.3]])
    fit = torch.tensor([[0.0, 0.1, 0.9, 0.8, 0.7, 0.2], [0.9, 0.8, 0.7, 0.1, 0.2, 0.3]])
    out = detail_fit_summary(sim, fit, k=3)
    assert out["overlap"] == pytest.approx((1 / 3 + 1) / 2)
    # query 0: best-fit keys 2,3,4 have similarity 0.7, 0.1, 0.2 against median 0.5 -> 2 of 3 below
    assert out["below_median"] == pytest.approx((2 / 3 + 0) / 2)
    assert out["fit_of_similar"] == pytest.approx(((0.0 + 0.1 + 0.9) / 3 + (0.9 + 0.8 + 0.7) / 3) / 2)
    assert out["fit_of_best"] == pytest.approx(((0.9 + 0.8 + 0.7) / 3 + (0.9 + 0.8 + 0.7) / 3) / 2)


def test_detail_fit_summary_ignores_nan_and_rejects_bad_input():
    sim = torch.tensor([[math.nan, 0.8, 0.7, 0.1]])
    fit = torch.tensor([[math.nan, 0.1, 0.9, 0.8]])
    out = detail_fit_summary(sim, fit, k=2)  # key 0 ignored
    assert out["overlap"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="fewer than k = 4"):
        detail_fit_summary(sim, fit, k=4)
    with pytest.raises(ValueError, match="same shape"):
        detail_fit_summary(sim, fit[:, :3])


def _gla_details(lss="official"):
    torch.manual_seed(0)
    gla = GlobalLearnableAttention(n_hashes=2, channels=8, reduction=2, chunk_size=6, lss_variant=lss).double().eval()
    gla.keep_details = True
    x = torch.randn(1, 8, 5, 6, dtype=torch.float64)
    gla.generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        gla(x)
    return gla.details


def test_chunk_scores_rebuild_the_softmax():
    det = _gla_details()
    for pos in (0, 7, 29):
        out = chunk_scores(det, pos, round_index=1)
        c = out["s_f"].shape[0]
        assert out["s_f"].shape == (c, 3 * c) and (out["s_f"] >= 0).all()
        torch.testing.assert_close(torch.softmax(out["s_f"] + out["s_l"], -1), out["weights"])
        torch.testing.assert_close(out["s_l_centred"].mean(-1), torch.zeros(c, dtype=torch.float64))
        assert int(det["layout"].undo_idx[0, 1, pos]) == out["chunk"] * c + out["slot"]
    with pytest.raises(ValueError, match="position must be in"):
        chunk_scores(det, 30)
    with pytest.raises(ValueError, match="round_index"):
        chunk_scores(det, 0, round_index=2)


def test_chunk_scores_without_learnable_score():
    out = chunk_scores(_gla_details("none"), 3)
    assert torch.equal(out["s_l"], torch.zeros_like(out["s_l"]))
    torch.testing.assert_close(torch.softmax(out["s_f"], -1), out["weights"])


def test_top_attended_stats_on_a_hand_made_map():
    h, w = 4, 5
    emb = torch.eye(h * w)[:, :8].double() + 0.1  # (L, C')
    one_hot = lambda p: torch.nn.functional.one_hot(torch.tensor(p), h * w).double()  # noqa: E731

    def weights_of(qp):  # all weight on the position to the right of the query
        return one_hot(qp + 1)

    out = top_attended_stats(weights_of, emb, [0, 6], (h, w), k=1)
    assert out["mean_distance"] == pytest.approx(1.0)
    assert out["near_weight"] == pytest.approx(1.0) and out["shared"] == 1
    far = top_attended_stats(lambda qp: one_hot(19), emb, [0], (h, w), k=1, other=weights_of)
    assert far["mean_distance"] == pytest.approx(math.hypot(3, 4)) and far["near_weight"] == 0 and far["shared"] == 0
    with pytest.raises(ValueError, match="k must be in"):
        top_attended_stats(weights_of, emb, [0], (h, w), k=21)


def test_seed_hashing_makes_the_network_deterministic():
    torch.manual_seed(0)
    net = build_model("dlsn", scale=2, preset="small").eval()
    x = torch.rand(1, 3, 12, 12)
    assert seed_hashing(net) == 2
    with torch.no_grad():
        a = net(x)
        seed_hashing(net)
        b = net(x)
    assert torch.equal(a, b)
    with pytest.raises(TypeError, match="attention_modules"):
        seed_hashing(torch.nn.Linear(2, 2))


def test_bucket_summary_averages_draws():
    dets = []
    for seed in (1, 2):
        torch.manual_seed(0)
        gla = GlobalLearnableAttention(n_hashes=2, channels=8, reduction=2, chunk_size=6).double().eval()
        gla.keep_details = True
        gla.generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            gla(torch.randn(1, 8, 5, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0)))
        dets.append(gla.details)
    n_b = dets[0]["n_buckets"]
    out = bucket_summary(dets, n_b, torch.arange(0, 30, 3), k=4)
    assert out["sizes"].shape == (4, n_b) and (out["sizes"].sum(-1) == 30).all()
    occupied = (out["sizes"] > 0).sum(-1).double().mean()
    assert out["occupied"] == pytest.approx(float(occupied))
    assert 1 <= out["effective"] <= out["occupied"] <= n_b
    assert all(0 <= out[n] <= 1 for n in ("largest_share", "same_bucket", "chance_same", "reachable"))
    with pytest.raises(ValueError, match="at least one run"):
        bucket_summary([], n_b, torch.arange(3))
