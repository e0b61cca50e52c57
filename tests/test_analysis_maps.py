"""srlib.analysis.maps and srlib.viz.plots: exact values on hand-made inputs, shapes, errors,
and the softmax-flattening statistics against their analytic expectation (HSPAN Fig. 1)."""

import math

import matplotlib
import pytest
import torch
import torch.nn.functional as F

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from srlib.attention.nla import non_local_attention  # noqa: E402
from srlib.models.common import DIV2K_MEAN  # noqa: E402
from srlib.analysis.maps import (  # noqa: E402
    HSPAN_FIG1_NS,
    attention_statistics,
    features_for_attention,
    nonlocal_mass,
    patch_descriptors,
    query_attention_map,
    softmax_flattening,
)
from srlib.viz import plot_attention_maps, plot_flattening_curves, plot_softmax_examples  # noqa: E402


# ------------------------------------------------------------------------------------ query_attention_map
def test_query_map_is_the_query_row_in_row_major_order():
    weights = torch.arange(36.0).view(6, 6)  # L = 6 = 2 x 3
    m = query_attention_map(weights, (1, 2), (2, 3))  # p = 1 * 3 + 2 = 5
    assert torch.equal(m, torch.tensor([[30.0, 31.0, 32.0], [33.0, 34.0, 35.0]]))
    assert torch.equal(query_attention_map(weights, (0, 1), (2, 3)), torch.arange(6.0, 12.0).view(2, 3))


def test_query_map_batched_selects_batch_element():
    weights = torch.stack([torch.eye(4), 2 * torch.eye(4)])
    assert torch.equal(query_attention_map(weights, (1, 0), (2, 2), batch=1), torch.tensor([[0.0, 0.0], [2.0, 0.0]]))
    assert torch.equal(query_attention_map(weights, (1, 0), (2, 2)), torch.tensor([[0.0, 0.0], [1.0, 0.0]]))


def test_query_map_of_real_attention_sums_to_one_and_matches_entry():
    g = torch.Generator().manual_seed(0)
    q = torch.randn(1, 12, 4, generator=g, dtype=torch.float64)
    _, w = non_local_attention(q, q, q, return_map=True)
    m = query_attention_map(w, (2, 1), (3, 4))
    assert m.shape == (3, 4)
    torch.testing.assert_close(m.sum(), torch.tensor(1.0, dtype=torch.float64))
    assert m[0, 3] == w[0, 2 * 4 + 1, 3]


@pytest.mark.parametrize(
    "weights, query, hw, match",
    [
        (torch.zeros(6, 6), (0, 0), (2, 2), "H \\* W == L"),
        (torch.zeros(6, 6), (2, 0), (2, 3), "outside"),
        (torch.zeros(6, 6), (0, -1), (2, 3), "outside"),
        (torch.zeros(6, 5), (0, 0), (2, 3), "square"),
        (torch.zeros(6), (0, 0), (2, 3), "\\(L, L\\)"),
        (torch.zeros(2, 6, 6), (0, 0), (2, 3), None),
    ],
)
def test_query_map_errors(weights, query, hw, match):
    if match is None:  # batch index out of range
        with pytest.raises(ValueError, match="batch=2"):
            query_attention_map(weights, query, hw, batch=2)
    else:
        with pytest.raises(ValueError, match=match):
            query_attention_map(weights, query, hw)


def test_nonlocal_mass_exact_and_errors():
    m = torch.zeros(5, 5)
    m[2, 2], m[2, 3], m[0, 0], m[4, 2] = 0.5, 0.25, 0.125, 0.125  # distances 0, 1, sqrt(8), 2
    assert nonlocal_mass(m, (2, 2), 0).item() == 0.5
    assert nonlocal_mass(m, (2, 2), 1).item() == 0.25
    assert nonlocal_mass(m, (2, 2), 2).item() == 0.125  # distance exactly 2 is not "far"
    assert nonlocal_mass(m, (2, 2), 3).item() == 0.0
    assert nonlocal_mass(2 * m, (2, 2), 1).item() == 0.25  # normalised by the total
    with pytest.raises(ValueError, match="outside"):
        nonlocal_mass(m, (5, 0), 1)
    with pytest.raises(ValueError, match="radius"):
        nonlocal_mass(m, (0, 0), -1)
    with pytest.raises(ValueError, match="no positive"):
        nonlocal_mass(torch.zeros(3, 3), (0, 0), 1)


# ------------------------------------------------------------------------------------ features
def test_features_are_edsr_head_with_private_generator():
    img = torch.rand(3, 5, 6, generator=torch.Generator().manual_seed(3))
    torch.manual_seed(123)
    a = features_for_attention(img, channels=4, kernel_size=1, seed=7)
    torch.manual_seed(999)  # global RNG does not matter
    b = features_for_attention(img, channels=4, kernel_size=1, seed=7)
    assert a.shape == (1, 4, 5, 6)
    assert torch.equal(a, b)
    assert not torch.equal(a, features_for_attention(img, channels=4, kernel_size=1, seed=8))
    # Re-draw the documented weights: U(-1/sqrt(fan_in), 1/sqrt(fan_in)), weight then bias, float64.
    gen = torch.Generator().manual_seed(7)
    bound = 1 / math.sqrt(3)
    w = (torch.rand(4, 3, 1, 1, generator=gen, dtype=torch.float64) * 2 - 1) * bound
    bias = (torch.rand(4, generator=gen, dtype=torch.float64) * 2 - 1) * bound
    centred = img - torch.tensor(DIV2K_MEAN).view(3, 1, 1)
    expected = torch.einsum("oc,chw->ohw", w[:, :, 0, 0].float(), centred) + bias.float().view(4, 1, 1)
    torch.testing.assert_close(a[0], expected)


def test_features_3x3_shape_and_errors():
    img = torch.rand(1, 3, 7, 9)
    assert features_for_attention(img, channels=8).shape == (1, 8, 7, 9)
    with pytest.raises(ValueError, match="kernel_size"):
        features_for_attention(img, kernel_size=2)
    with pytest.raises(ValueError, match="channels"):
        features_for_attention(img, channels=0)
    with pytest.raises(ValueError, match="\\(3, H, W\\)"):
        features_for_attention(torch.rand(1, 7, 9))
    with pytest.raises(ValueError, match="floating"):
        features_for_attention(torch.zeros(3, 4, 4, dtype=torch.uint8))


def test_patch_descriptor_size_one_is_normalised_centred_colour():
    img = torch.tensor([[[0.0, 1.0]], [[0.5, 0.5]], [[1.0, 0.0]]])  # (3, 1, 2), mean colour (0.5, 0.5, 0.5)
    d = patch_descriptors(img, patch_size=1)
    s = 1 / math.sqrt(2)
    assert d.shape == (1, 3, 1, 2)
    torch.testing.assert_close(d[0, :, 0, 0], torch.tensor([-s, 0.0, s]))
    torch.testing.assert_close(d[0, :, 0, 1], torch.tensor([s, 0.0, -s]))


def test_patch_descriptors_unit_norm_and_equal_for_repeated_patches():
    g = torch.Generator().manual_seed(0)
    tile = torch.rand(3, 4, 4, generator=g)
    img = tile.repeat(1, 4, 4)  # period 4 in both directions, 16 x 16
    d = patch_descriptors(img, patch_size=3)
    assert d.shape == (1, 27, 16, 16)
    torch.testing.assert_close(d.norm(dim=1), torch.ones(1, 16, 16))
    # interior pixels one period apart see the same 3x3 patch: identical descriptors, cosine 1
    torch.testing.assert_close(d[0, :, 5, 6], d[0, :, 9, 10])
    torch.testing.assert_close(d[0, :, 5, 6] @ d[0, :, 5, 10], torch.tensor(1.0))
    # the centre entry of channel c is the centred pixel value divided by the patch norm
    centred = img - img.mean(dim=(1, 2), keepdim=True)
    patch = centred[:, 4:7, 5:8]
    torch.testing.assert_close(d[0, 1 * 9 + 4, 5, 6], centred[1, 5, 6] / patch.norm())


def test_patch_descriptors_errors():
    img = torch.rand(3, 4, 4)
    with pytest.raises(ValueError, match="odd"):
        patch_descriptors(img, patch_size=4)
    with pytest.raises(ValueError, match="too large"):
        patch_descriptors(img, patch_size=9)


# ------------------------------------------------------------------------------------ statistics
def test_attention_statistics_exact_values():
    p = torch.tensor([[0.5, 0.25, 0.25, 0.0], [0.25, 0.25, 0.25, 0.25], [0.0, 1.0, 0.0, 0.0]], dtype=torch.float64)
    s = attention_statistics(p, top_k=2)
    torch.testing.assert_close(s["max_weight"], torch.tensor([0.5, 0.25, 1.0], dtype=torch.float64))
    h = torch.tensor([1.5 * math.log(2), math.log(4), 0.0], dtype=torch.float64)
    torch.testing.assert_close(s["entropy"], h)
    torch.testing.assert_close(s["normalized_entropy"], torch.tensor([0.75, 1.0, 0.0], dtype=torch.float64))
    torch.testing.assert_close(s["top_mass"], torch.tensor([0.75, 0.5, 1.0], dtype=torch.float64))
    torch.testing.assert_close(s["effective_support"], torch.tensor([2**1.5, 4.0, 1.0], dtype=torch.float64))


def test_attention_statistics_errors():
    with pytest.raises(ValueError, match="top_k"):
        attention_statistics(torch.full((3,), 1 / 3), top_k=4)
    with pytest.raises(ValueError, match="non-negative"):
        attention_statistics(torch.tensor([1.5, -0.5]), top_k=1)


# ------------------------------------------------------------------------------------ softmax flattening
def test_flattening_is_reproducible_by_hand():
    ns, trials = [4, 9], 5
    stats = softmax_flattening(ns, trials, torch.Generator().manual_seed(11), top_k=2)
    g = torch.Generator().manual_seed(11)
    for i, n in enumerate(ns):
        p = torch.softmax(torch.randn(trials, n, generator=g, dtype=torch.float64), -1)
        torch.testing.assert_close(stats["example"][i], p[0])
        torch.testing.assert_close(stats["max_weight"][i], p.max(-1).values.mean())
        torch.testing.assert_close(stats["top_mass"][i], p.topk(2, -1).values.sum(-1).mean())
        torch.testing.assert_close(stats["entropy"][i], -(p * p.log()).sum(-1).mean())
    assert torch.equal(stats["n"], torch.tensor(ns))
    assert stats["top_k"] == 2 and stats["max_weight_std"].shape == (2,)


def test_flattening_default_generator_is_deterministic():
    a = softmax_flattening([16, 25], trials=3)
    b = softmax_flattening([16, 25], trials=3)
    assert torch.equal(a["entropy"], b["entropy"])


def test_flattening_follows_analytic_expectation():
    """HSPAN Fig. 1: softmax of N(0,1) scores flattens as n grows; entropy -> ln n - 1/2."""
    assert HSPAN_FIG1_NS == (16, 36, 64, 100, 144, 196, 256, 324, 400)
    s = softmax_flattening(HSPAN_FIG1_NS, trials=2000, generator=torch.Generator().manual_seed(0))
    assert (s["max_weight"].diff() < 0).all()  # the largest weight shrinks
    assert (s["top_mass"].diff() < 0).all()  # the top entries hold less and less of the mass
    assert (s["normalized_entropy"].diff() > 0).all()  # closer and closer to uniform
    n = s["n"].double()
    # large-n limit ln n - 1/2 (finite-n corrections are O(1/n); ~0.09 at n = 16)
    assert abs(s["entropy"][-1].item() - (math.log(400) - 0.5)) < 0.03
    assert ((s["entropy"] - (n.log() - 0.5)).abs() < 0.12).all()
    # the largest weight is well below 1 / 10 of the mass already at n = 20^2 ...
    assert s["max_weight"][-1] < 0.04
    # ... but still above uniform: n * max grows slowly, like exp(m_n - 1/2)
    assert ((n * s["max_weight"]).diff() > 0).all()


@pytest.mark.parametrize(
    "kwargs, match",
    [({"ns": []}, "at least one"), ({"ns": [3], "top_k": 4}, "n=3"), ({"ns": [4], "trials": 0}, "trials")],
)
def test_flattening_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        softmax_flattening(**kwargs)


# ------------------------------------------------------------------------------------ plots
def test_plot_attention_maps_layout_and_errors():
    img = torch.rand(3, 6, 8)
    maps = torch.rand(2, 6, 8)
    fig = plot_attention_maps(img, maps, [(1, 1), (4, 6)], titles=["a", "b"])
    visible = [ax for ax in fig.axes if ax.get_visible() and ax.get_label() != "<colorbar>"]
    assert [ax.get_title() for ax in visible[:3]] == ["image and queries", "a", "b"]
    plt.close(fig)
    fig = plot_attention_maps(img, list(maps), [(1, 1), (4, 6)], ncols=2)  # 2 x 2 grid, one hidden panel
    assert sum(1 for ax in fig.axes if not ax.axison) == 1
    plt.close(fig)
    with pytest.raises(ValueError, match="queries"):
        plot_attention_maps(img, maps, [(1, 1)])
    with pytest.raises(ValueError, match="match the image"):
        plot_attention_maps(img, torch.rand(2, 5, 8), [(1, 1), (2, 2)])
    with pytest.raises(ValueError, match="non-negative"):
        plot_attention_maps(img, -maps, [(1, 1), (2, 2)])


def test_flattening_plots_have_one_panel_per_n():
    s = softmax_flattening([16, 36, 64, 100], trials=4, generator=torch.Generator().manual_seed(0))
    fig = plot_softmax_examples(s, ncols=3)
    titled = [ax.get_title() for ax in fig.axes if ax.axison]
    assert titled[0].startswith("n = 4²") and len(titled) == 4
    plt.close(fig)
    fig = plot_flattening_curves(s)
    assert len(fig.axes) == 3
    plt.close(fig)
    with pytest.raises(ValueError, match="softmax_flattening"):
        plot_softmax_examples({"n": torch.tensor([4])})


def test_patch_descriptor_attention_prefers_the_repeated_patch():
    """With theta = phi = patch descriptors, a query's largest non-self weight is on its repetition."""
    g = torch.Generator().manual_seed(1)
    img = torch.rand(3, 12, 12, generator=g) * 0.2 + 0.4
    motif = torch.rand(3, 3, 3, generator=g)
    img[:, 2:5, 2:5] = motif
    img[:, 7:10, 6:9] = motif
    d = patch_descriptors(img, 3).flatten(2).transpose(1, 2) / math.sqrt(0.05)
    _, w = non_local_attention(d, d, d, return_map=True)
    m = query_attention_map(w, (3, 3), (12, 12)).clone()
    m[3, 3] = 0
    assert divmod(int(m.argmax()), 12) == (8, 7)
    assert F.cosine_similarity(d[0, 3 * 12 + 3], d[0, 8 * 12 + 7], dim=0) > 0.999
