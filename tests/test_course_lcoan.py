"""srlib.course.lcoan.study (the measurements of notebook 05) and srlib.course.lcoan.figures."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import pytest
import torch
import torch.nn.functional as F

from srlib.attention.lcoa import assign_clusters, init_centroids
from srlib.course.lcoan.study import (
    DenseCoAStack,
    LCoAStack,
    NLAStack,
    centre_crops,
    centroid_log,
    compare_bucketings,
    ema_run,
    first_pattern,
    format_bucketings,
    format_cost_table,
    format_depth_table,
    format_kmeans_trace,
    layer_study,
    table1_stacks,
)
from srlib.models import build_model
from srlib.analysis.overlap import true_neighbours


def test_table1_stacks_keep_the_shape_and_share_weights_only_when_collaborative():
    stacks = table1_stacks(channels=8, modules=3, seed=0)
    assert list(stacks) == ["NLA", "LSP", "CoA", "LCoA"]
    x = torch.randn(1, 8, 24, 24, generator=torch.Generator().manual_seed(0))  # L = 576: windows of 384 fit
    for s in stacks.values():
        with torch.no_grad():
            assert s(x).shape == x.shape
    assert isinstance(stacks["NLA"], NLAStack) and isinstance(stacks["CoA"], DenseCoAStack)
    assert isinstance(stacks["LCoA"], LCoAStack) and stacks["LCoA"].collaborative
    assert not stacks["LSP"].collaborative


def test_dense_coa_with_one_module_is_one_dense_attention():
    torch.manual_seed(0)
    coa = DenseCoAStack(channels=4, modules=1).eval()
    x = torch.randn(1, 4, 5, 5, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(coa(x), coa.first(x))  # NonLocalAttention: x + 0.1 * attention


def test_compare_bucketings_one_bucket_has_full_recall_and_share():
    x = F.normalize(torch.randn(1, 64, 6, generator=torch.Generator().manual_seed(0)), dim=-1)
    nb = true_neighbours(x, 4)
    rows = compare_bucketings(x, nb, n_buckets=(1,), window=64, methods=(("k-means", 1),), seeds=(0,))
    assert len(rows) == 1 and rows[0]["method"] == "k-means x1"
    assert rows[0]["recall"] == pytest.approx(1.0) and rows[0]["share"] == pytest.approx(1.0)
    assert rows[0]["window"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="'k-means' or 'LSH'"):
        compare_bucketings(x, nb, n_buckets=(2,), window=32, methods=(("random", 1),), seeds=(0,))


def test_ema_run_moves_towards_the_batch_and_reports_shares():
    x = F.normalize(torch.randn(1, 50, 4, generator=torch.Generator().manual_seed(2)), dim=-1)
    means = init_centroids(x, 3, 1, generator=torch.Generator().manual_seed(0))
    moved, largest = ema_run(means, x, 0.5, "centroid", steps=5)
    assert len(moved) == len(largest) == 5
    assert all(0 < s <= 1 for s in largest)
    assert moved == sorted(moved)  # decay 0.5 towards a fixed target: the distance from the start grows
    assert largest[0] == pytest.approx(float(torch.bincount(assign_clusters(x, means).flatten()).max()) / 50)


def test_centre_crops_and_first_pattern_and_layer_study():
    items = [{"lr": torch.rand(3, 20, 30)}, {"lr": torch.rand(3, 16, 16)}]
    crops = centre_crops(items, 16)
    assert [tuple(c.shape) for c in crops] == [(1, 3, 16, 16)] * 2
    torch.testing.assert_close(crops[0][0], items[0]["lr"][:, 2:18, 7:23])
    torch.manual_seed(0)
    net = build_model("lcoan", scale=2, preset="small").eval()
    net.body[0].lcoa.kmeans.generator = torch.Generator().manual_seed(0)
    pat = first_pattern(net, crops[0])
    L = 16 * 16
    assert pat["mask"].shape == (1, L, L) and pat["codes"].shape[-1] == L and pat["emb"].shape[:2] == (1, L)
    names = [n for n, _ in net.attention_modules()]
    overlaps, qmaps, uniform = layer_study(net, crops[0], names, (3, 4))
    assert overlaps["overlap"][0] == pytest.approx(1.0) and len(qmaps) == len(names)
    assert qmaps[0].shape == (16, 16) and 0 < uniform < 1


def test_lcoan_figures_draw():
    from srlib.course.lcoan import figures as lf

    codes = [torch.randint(0, 4, (64,)) for _ in range(3)]
    figs = [lf.plot_kmeans_steps(torch.rand(3, 8, 8), codes, [0, 2], 4),
            lf.plot_ema_runs({"a": ([1.0, 2.0], [0.5, 0.6]), "literal": ([1.0, 3.0], [0.5, 0.9])}),
            lf.plot_bucket_recall([dict(K=4, method="k-means x1", rounds=1, recall=0.5, share=0.2, window=0.6)], 8, 64)]
    assert [len(f.axes) for f in figs] == [3, 2, 1]


def test_kmeans_trace_follows_the_history():
    from srlib.attention.lcoa import kmeans_step
    from srlib.course.lcoan.study import kmeans_trace

    x = F.normalize(torch.randn(1, 40, 5, generator=torch.Generator().manual_seed(3)), dim=-1)
    h = [init_centroids(x, 4, 1, generator=torch.Generator().manual_seed(0))]
    h.append(kmeans_step(x, h[0]))
    rows = kmeans_trace(x, h)
    assert [r["t"] for r in rows] == [0, 1] and rows[0]["changed"] is None and rows[0]["shift"] is None
    assert torch.equal(rows[1]["codes"], assign_clusters(x, h[1])[0, 0])
    assert rows[1]["changed"] == pytest.approx(float((rows[1]["codes"] != rows[0]["codes"]).float().mean()))
    assert all(r["largest"] <= 40 and 0 <= r["empty"] < 4 for r in rows)
    assert rows[1]["cos"] >= rows[0]["cos"] - 1e-6  # a Lloyd step does not lower the objective here


def test_plot_codes_counts_used_clusters():
    from srlib.course.lcoan.figures import plot_codes

    fig = plot_codes(torch.rand(3, 4, 4), torch.tensor([0, 1] * 8), 5)
    assert fig.axes[1].get_title() == "k-means codes: 2 of 5 clusters used"


def test_format_kmeans_trace_leaves_the_first_changes_blank():
    trace = [dict(t=0, cos=0.5, changed=None, shift=None, empty=2, largest=30),
             dict(t=1, cos=0.625, changed=0.25, shift=0.125, empty=0, largest=20)]
    lines = format_kmeans_trace(trace, 64).split("\n")
    assert len(lines) == 3 and lines[0].split()[0] == "iter"
    assert lines[1].replace(" ", "") == "0|0.500|||2|30/64"
    assert lines[2].replace(" ", "") == "1|0.625|25.0%|0.1250|0|20/64"


def test_format_bucketings_lift_and_attended_keys():
    rows = [{"K": 16, "method": "LSH x2", "recall": 0.6, "share": 0.2, "window": 0.5, "rounds": 2}]
    line = format_bucketings(rows, 384, 4096).split("\n")[1]
    assert [f.strip() for f in line.split("|")] == ["16", "LSH x2", "0.600", "0.200", "3.0", "0.500", "2304 of 4096"]
    with pytest.raises(ZeroDivisionError):
        format_bucketings([dict(rows[0], share=0.0)], 384, 4096)


def test_format_cost_table_ratios_to_the_reference():
    cost = {"NLA": {"seconds_min": [2.0, 4.0], "peak_bytes": [2 * 2**20, 8 * 2**20]},
            "LCoA": {"seconds_min": [1.0, 1.0], "peak_bytes": [2**20, 2**20]}}
    lines = format_cost_table(cost, [2, 3], {"NLA": 10.0, "LCoA": 5.0}, {"NLA": 4.0, "LCoA": 1.0}).split("\n")
    assert len(lines) == 5
    assert [f.strip() for f in lines[4].split("|")] == ["9", "LCoA", "1.00", "0.25", "0.50", "1.0", "0.12", "0.25"]
    assert [f.strip() for f in lines[1].split("|")][3] == "1.00"  # NLA against itself
    with pytest.raises(KeyError):
        format_cost_table(cost, [2], {"NLA": 1.0}, {"NLA": 1.0})


def test_format_depth_table_four_rows_per_network():
    curves = {"trained": {"overlap": torch.tensor([1.0, 0.5]), "topk": torch.tensor([1.0, 0.25])}}
    agreement = {"trained": {"code_agreement": torch.tensor([1.0, 0.75]), "pattern_overlap": torch.tensor([1.0, 0.125])}}
    lines = format_depth_table(curves, agreement, ["X1", "X2"]).split("\n")
    assert len(lines) == 5 and lines[0].split() == ["X1", "X2"]
    assert lines[2].split()[-3:] == ["overlap", "1.000", "0.250"]
    assert lines[4].split()[-2:] == ["1.000", "0.125"]
    with pytest.raises(KeyError):
        format_depth_table(curves, {}, ["X1", "X2"])


def test_centroid_log_records_training_calls_only():
    torch.manual_seed(0)
    net = build_model("lcoan", scale=2, preset="small")
    km = net.body[0].lcoa.kmeans
    km.generator = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 12, 12)
    with centroid_log(km) as log:
        net.train()
        net(x)
        net(x)
        net.eval()
        with torch.no_grad():
            net(x)
    assert len(log["means"]) == len(log["sizes"]) == 2
    assert torch.equal(log["means"][-1], km.means) and int(log["sizes"][0].sum()) == 2 * 12 * 12
    net.train()
    net(x)  # the hook is gone after the context
    assert len(log["means"]) == 2
    with pytest.raises(TypeError, match="Kmeans"):
        with centroid_log(torch.nn.Linear(2, 2)):
            pass
