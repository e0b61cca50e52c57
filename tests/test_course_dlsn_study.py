"""srlib.course.dlsn.study: the measurements of notebook 03 (Fig. 1 detail fit, chunk scores, Fig. 4 statistics)."""

import math

import pytest
import torch

from srlib.attention.gla import GlobalLearnableAttention
from srlib.course.dlsn.study import (bucket_summary, centre_crop, chunk_scores, crops_psnr, detail_fit_summary,
                                     format_bucket_summary, lss_change, lss_dependence, query_maps, seed_hashing,
                                     top_attended_stats, variance_table)
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


def test_format_bucket_summary_one_line_per_layer():
    row = {"occupied": 3.0, "largest_share": 0.5, "effective": 2.25, "same_bucket": 0.75, "chance_same": 0.25,
           "reachable": 0.5, "chance_reachable": 0.125}
    table = format_bucket_summary({("trained", 0): row, ("untrained", 1): row}, ["body.0", "body.1"]).split("\n")
    assert len(table) == 3 and table[0].split()[:3] == ["GLA", "occupied", "largest"]
    assert table[1].split() == ["trained", "body.0", "3.0", "0.50", "2.2", "0.75", "0.25", "0.50", "0.12"]
    assert table[2].split()[:2] == ["untrained", "body.1"]
    with pytest.raises(IndexError):
        format_bucket_summary({("trained", 2): row}, ["body.0"])


def test_lss_change_is_zero_for_equal_runs_and_counts_total_variation():
    det = _gla_details()
    assert lss_change(det, det) == {"rounds": 0.0, "keys": 0.0}
    other = dict(det, round_weights=det["round_weights"].flip(1))  # the two rounds swapped
    expected = 0.5 * (det["round_weights"][0] - det["round_weights"][0].flip(0)).abs().sum(0).mean()
    assert lss_change(det, other)["rounds"] == pytest.approx(float(expected))
    off = _gla_details("none")
    out = lss_change(det, off)
    assert 0 < out["keys"] <= 1 and 0 <= out["rounds"] <= 1
    with pytest.raises(ValueError, match="differ in shape"):
        lss_change(det, dict(det, round_weights=det["round_weights"][:, :1]))


def test_lss_dependence_official_column_paper_row():
    torch.manual_seed(0)
    x = torch.randn(1, 8, 5, 6, dtype=torch.float64)
    counts = {}
    for variant in ("official", "paper"):
        torch.manual_seed(0)
        gla = GlobalLearnableAttention(n_hashes=2, channels=8, reduction=2, chunk_size=6,
                                       lss_variant=variant).double().eval()
        gla.keep_details = True
        gla.generator = torch.Generator().manual_seed(1)
        with torch.no_grad():
            gla(x)
        feats = torch.relu(torch.randn(1, 30, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(2)))
        counts[variant] = lss_dependence(gla, feats, gla.details["layout"], position=7)
    c = counts["official"]["chunk_size"]
    assert c == 6
    assert counts["official"]["rows_changed"] == c and counts["official"]["own_row"] <= 2
    assert counts["paper"]["rows_changed"] <= 2 and counts["paper"]["own_row"] == 3 * c
    with pytest.raises(ValueError, match="position must be in"):
        lss_dependence(gla, feats, gla.details["layout"], position=30)


def test_variance_table_rows_and_ratio():
    angles = torch.tensor([math.pi / 2, math.pi / 4])
    est = {"gaussian": torch.tensor([[0.0, 2.0], [0.0, 1.0]]), "superbit": torch.tensor([[0.0, 1.0], [0.0, 1.0]])}
    lines = variance_table(angles, torch.tensor([1.5, 0.5]), est).split("\n")
    assert len(lines) == 3
    assert lines[1].split() == ["90°", "1.500", "2.000", "0.500", "0.25"]
    assert lines[2].split() == ["45°", "0.500", "0.500", "0.500", "1.00"]
    with pytest.raises(ValueError, match="must have 2 rows"):
        variance_table(angles, torch.ones(3), est)


class _State:
    def __init__(self, weights):
        self.weights = weights

    def query(self, yx):
        return {"map": self.weights, "keys_for_90": 7, "bucket_sizes": [3, 4]}


def test_query_maps_dense_softmax_and_key_counts():
    h, w = 3, 4
    emb = torch.ones(h * w, 2, dtype=torch.float64)  # all keys equal: the dense softmax is uniform
    out = query_maps({"a": _State(torch.full((h, w), 1 / 12))}, emb, (1, 2), (h, w))
    assert list(out["maps"]) == ["a", "dense softmax of s_f"]
    torch.testing.assert_close(out["maps"]["dense softmax of s_f"], torch.full((h, w), 1 / 12, dtype=torch.float64))
    assert out["keys"] == {"a": 7, "dense": 11} and out["bucket_sizes"] == [3, 4]  # ceil(0.9 * 12) = 11
    emb2 = torch.zeros(h * w, 2, dtype=torch.float64)
    emb2[5] = 20.0  # the query itself dominates its dense softmax
    sharp = query_maps({}, emb2, (1, 1), (h, w))
    assert sharp["keys"] == {"dense": 1} and sharp["bucket_sizes"] is None
    with pytest.raises(ValueError, match="outside"):
        query_maps({}, emb, (3, 0), (h, w))
    with pytest.raises(ValueError, match="embedding must be"):
        query_maps({}, emb[:5], (0, 0), (h, w))


def test_centre_crop_matches_lr_and_hr():
    hr = torch.arange(3 * 20 * 24, dtype=torch.float64).view(3, 20, 24)
    item = {"lr": hr[:, ::2, ::2], "hr": hr, "name": "x"}
    out = centre_crop(item, size=4, scale=2)
    assert out["lr"].shape == (3, 4, 4) and out["hr"].shape == (3, 8, 8) and out["name"] == "x"
    assert torch.equal(out["hr"][:, ::2, ::2], out["lr"])  # the two crops cover the same region
    with pytest.raises(ValueError, match="smaller than the crop size 11"):
        centre_crop(item, size=11)


def test_crops_psnr_restores_the_attributes_and_is_seeded():
    torch.manual_seed(0)
    net = build_model("dlsn", scale=2, preset="small").eval()
    g = torch.Generator().manual_seed(0)
    hr = torch.rand(3, 32, 32, generator=g)
    crops = [{"lr": torch.nn.functional.avg_pool2d(hr[None], 2)[0], "hr": hr, "name": "r"}]
    before = [(m.n_hashes, m.res_scale) for _, m in net.attention_modules()]
    a, b = crops_psnr(net, crops, 2, n_hashes=1), crops_psnr(net, crops, 2, n_hashes=1)
    assert a == b and math.isfinite(a)
    assert crops_psnr(net, crops, 2, res_scale=0.0) != crops_psnr(net, crops, 2)
    assert [(m.n_hashes, m.res_scale) for _, m in net.attention_modules()] == before
    with pytest.raises(ValueError, match="n_hashes must be >= 1, got 0"):
        crops_psnr(net, crops, 2, n_hashes=0)
    with pytest.raises(TypeError, match="attention_modules"):
        crops_psnr(torch.nn.Linear(2, 2), crops)
