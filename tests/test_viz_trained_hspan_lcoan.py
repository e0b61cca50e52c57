"""Tests for the helpers behind the trained-network sections of notebooks 04 (HSPAN) and 05 (LCoAN).

``srlib.analysis.sparsity``: :func:`nla_twin`, :func:`same_scores_statistics`; ``srlib.analysis.overlap``:
:func:`depth_overlap_curve`, :func:`pattern_agreement`. Small hand-made cases with exact values, plus the shipped
trained networks (``srlib.pretrained``, no data needed).
"""

import math

import pytest
import torch
import torch.nn as nn

from srlib.attention.hspa import HSPA
from srlib.attention.lcoa import LCoA
from srlib.attention.nla import NonLocalAttention
from srlib.attention.softthreshold import soft_threshold
from srlib.pretrained import build_small, pretrained
from srlib.viz.explorer import collect_attention_layers
from srlib.analysis.capture import module_inputs
from srlib.analysis.overlap import (
    depth_overlap_curve,
    feature_attention_map,
    layer_overlaps,
    pattern_agreement,
)
from srlib.analysis.sparsity import attention_rows, nla_twin, same_scores_statistics, support_statistics


# ----------------------------------------------------------------------------------------------------------
# HSPA: the same scores under ST and under softmax
# ----------------------------------------------------------------------------------------------------------
def _identity_hspa(topk=None) -> HSPA:
    """HSPA with q = k = x (1x1 identity embeddings, PReLU slope 1): scores s_ij = x_i . x_j."""
    m = HSPA(channel=2, reduction=1, res_scale=1.0, topk=topk).eval()
    with torch.no_grad():
        for seq in (m.conv_match1, m.conv_match2):
            seq[0].weight.copy_(torch.eye(2).view(2, 2, 1, 1))
            seq[0].bias.zero_()
            seq[1].weight.fill_(1.0)
    return m


# three positions (1, C=2, H=1, W=3): x_0 = x_2 = (2, 0), x_1 = (0, 1) -> scores [[4,0,4],[0,1,0],[4,0,4]]
_X3 = torch.tensor([[2.0, 0.0, 2.0], [0.0, 1.0, 0.0]]).view(1, 2, 1, 3)


def test_nla_twin_softmax_of_the_same_scores():
    torch.manual_seed(0)
    hspa = HSPA(channel=8, reduction=2, res_scale=0.1, topk=4).eval()
    twin = nla_twin(hspa)
    assert type(twin) is NonLocalAttention and twin.normalizer is None and twin.res_scale == 0.1
    assert twin.conv_match1[0].out_channels == 4  # reduction kept
    assert not twin.training
    x = torch.randn(1, 8, 5, 6, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        s = hspa.similarity(x)  # (1, 30, 30)
    torch.testing.assert_close(attention_rows(twin, x), torch.softmax(s, dim=-1))
    torch.testing.assert_close(attention_rows(hspa, x), soft_threshold(s, dim=-1, topk=4))
    # a copy: changing the twin leaves the module alone
    with torch.no_grad():
        twin.conv_match1[0].weight.add_(1.0)
    assert not torch.equal(twin.conv_match1[0].weight, hspa.conv_match1[0].weight)
    with pytest.raises(ValueError, match="NonLocalAttention"):
        nla_twin(nn.Conv2d(2, 2, 1))


def test_same_scores_statistics_exact_values():
    # ST rows: [0.5, 0, 0.5], [0, 1, 0], [0.5, 0, 0.5]; softmax rows: [e4, 1, e4]/(2e4 + 1), [1, e, 1]/(e + 2)
    stats = same_scores_statistics(_identity_hspa(), _X3, chunk=2)  # two chunks: rows 0-1, row 2
    st, sm = stats["module"], stats["softmax"]
    assert st["support"].tolist() == [2, 1, 2] and st["coverage"].tolist() == [2, 1, 2]
    assert st["support_mean"] == pytest.approx(5 / 3)
    # softmax: full support; 90 % needs 2 keys in rows 0 and 2 (2e4/(2e4+1) = 0.991), all 3 in row 1 (0.788)
    assert sm["support"].tolist() == [3, 3, 3] and sm["coverage"].tolist() == [2, 3, 2]
    assert 2 * math.e**4 / (2 * math.e**4 + 1) > 0.9 > (math.e + 1) / (math.e + 2)
    with pytest.raises(ValueError, match="B, C, H, W"):
        same_scores_statistics(_identity_hspa(), _X3[0])


def test_same_scores_statistics_equals_full_map():
    torch.manual_seed(0)
    hspa = HSPA(channel=8, reduction=2, topk=4).eval()
    x = torch.randn(2, 8, 6, 7, generator=torch.Generator().manual_seed(2))
    stats = same_scores_statistics(hspa, x, ks=(4,), chunk=10)
    with torch.no_grad():
        s = hspa.similarity(x)
    full_st = support_statistics(soft_threshold(s, dim=-1, topk=4), ks=(4,))
    full_sm = support_statistics(torch.softmax(s, dim=-1), ks=(4,))
    for got, want in ((stats["module"], full_st), (stats["softmax"], full_sm)):
        assert torch.equal(got["support"], want["support"]) and torch.equal(got["coverage"], want["coverage"])
        assert got["frac_support_gt"] == want["frac_support_gt"] and got["rows"] == 2 * 42
    assert stats["softmax"]["support_min"] == 42


def test_trained_hspan_is_sparse_and_softmax_of_its_scores_is_flat():
    """The shipped HSPAN on a smooth synthetic 24x24 input: ST keeps few keys, softmax nearly all."""
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 24), torch.linspace(0, 1, 24), indexing="ij")
    lr = torch.stack([0.5 + 0.4 * torch.sin(6 * xx), 0.5 + 0.4 * torch.cos(5 * yy), 0.3 + 0.4 * xx * yy])[None]
    layers = collect_attention_layers(pretrained("hspan-small-x2"), lr)["HSPA"]
    assert len(layers) == 2 and all(m.topk == 64 and m.mode == "exact" for m, _ in layers)
    for hspa, x in layers:
        stats = same_scores_statistics(hspa, x)
        assert stats["softmax"]["support_min"] == 576
        assert stats["module"]["support_max"] < 576
        assert 5 * stats["module"]["coverage"].double().mean() < stats["softmax"]["coverage"].double().mean()


# ----------------------------------------------------------------------------------------------------------
# LCoAN: overlap across depth, and the shallow pattern recomputed at depth
# ----------------------------------------------------------------------------------------------------------
class _Const(nn.Module):
    """Ignores its input and returns a fixed tensor."""

    def __init__(self, t: torch.Tensor):
        super().__init__()
        self.t = t

    def forward(self, x):
        return self.t


def test_depth_overlap_curve_exact_two_positions():
    # depth 0: both positions point the same way -> rows [1/2, 1/2]; depth 1: orthogonal -> softmax([1/t, 0])
    x0 = torch.ones(1, 2, 1, 2)
    x1 = torch.tensor([[1.0, 0.0], [0.0, 1.0]]).view(1, 2, 1, 2)
    model = nn.Sequential(nn.Identity(), _Const(x1), nn.Identity())
    out = depth_overlap_curve(model, [x0, x0], ["0", "2"], temperature=1.0, top_k=2)
    sigma = 1 / (1 + math.exp(-1.0))
    torch.testing.assert_close(out["overlap"], torch.tensor([1.0, 1.5 - sigma], dtype=torch.float64))
    assert out["names"] == ["0", "2"] and out["per_input"].shape == (2, 2)
    torch.testing.assert_close(out["topk"], torch.ones(2, dtype=torch.float64))  # k = L: every key in common
    ref1 = depth_overlap_curve(model, x0, ["0", "2"], temperature=1.0, reference=1)
    torch.testing.assert_close(ref1["overlap"], torch.tensor([1.5 - sigma, 1.0], dtype=torch.float64))
    assert ref1["topk"] is None and ref1["per_input_topk"] is None


def test_depth_overlap_curve_matches_layer_overlaps_on_lcoan():
    torch.manual_seed(0)
    net = build_small("lcoan").eval()
    net.body[0].attention[0].kmeans.generator = torch.Generator().manual_seed(0)
    g = torch.Generator().manual_seed(3)
    inputs = [torch.rand(1, 3, 16, 16, generator=g), torch.rand(1, 3, 12, 20, generator=g)]
    names = ["body.0.local_body.0", "body.0.attention.0", "body.1.attention.0"]
    out = depth_overlap_curve(net, inputs, names, temperature=0.1, reference=1, top_k=8)
    for i, x in enumerate(inputs):  # an independent route: all maps at once, then layer_overlaps
        maps = {n: feature_attention_map(t, 0.1) for n, t in module_inputs(net, x, names).items()}
        want = layer_overlaps(maps, reference=1, top_k=8)
        torch.testing.assert_close(out["per_input"][i], want["overlap"].double())
        torch.testing.assert_close(out["per_input_topk"][i], want["topk"].double())
    torch.testing.assert_close(out["overlap"], out["per_input"].mean(0))
    assert abs(float(out["overlap"][1]) - 1) < 1e-6
    with pytest.raises(ValueError, match="out of range"):
        depth_overlap_curve(net, inputs, names, reference=3)
    with pytest.raises(ValueError, match="at least one"):
        depth_overlap_curve(net, [], names)
    with pytest.raises(ValueError, match="not submodules of LCoAN"):
        depth_overlap_curve(net, inputs, ["body.9"])


def _lcoa_two_clusters() -> LCoA:
    """LCoA with identity embedding, centroids e1 and e2, windows of 1 (keys: own, previous, next slot)."""
    m = LCoA(channels=2, k_size=1, reduction=1, n_clusters=2, window_size=1, res_scale=0.1)
    with torch.no_grad():
        m.conv_match[0].weight.copy_(torch.eye(2).view(2, 2, 1, 1))
        m.conv_match[0].bias.zero_()
        m.kmeans.means.copy_(torch.eye(2).view(1, 2, 2))
        m.kmeans.initted.fill_(True)
    return m.train()


def test_pattern_agreement_exact_values():
    e1, e2 = [1.0, 0.0], [0.0, 1.0]
    ref = torch.tensor([e1, e1, e2, e2]).T.reshape(1, 2, 1, 4)  # codes [0, 0, 1, 1], sorted order [0, 1, 2, 3]
    other = torch.tensor([e2, e1, e2, e1]).T.reshape(1, 2, 1, 4)  # codes [1, 0, 1, 0], sorted order [1, 3, 0, 2]
    m = _lcoa_two_clusters()
    out = pattern_agreement(m, {"X1": ref, "Xm": other, "same": ref.clone()}, reference="X1")
    assert out["names"] == ["X1", "Xm", "same"]
    # codes agree at positions 1 and 2; each query sees 3 of 4 keys, 2 in common with its reference set: 2/4
    torch.testing.assert_close(out["code_agreement"], torch.tensor([1.0, 0.5, 1.0], dtype=torch.float64))
    torch.testing.assert_close(out["pattern_overlap"], torch.tensor([1.0, 0.5, 1.0], dtype=torch.float64))
    assert m.training and not m.keep_details and m.details is None  # state restored
    as_list = pattern_agreement(m, [other, ref], reference=1)
    torch.testing.assert_close(as_list["code_agreement"], torch.tensor([0.5, 1.0], dtype=torch.float64))
    with pytest.raises(ValueError, match="reference"):
        pattern_agreement(m, [ref, other], reference="X1")
    with pytest.raises(ValueError, match="shape"):
        pattern_agreement(m, [ref, torch.zeros(1, 2, 2, 4)])
    with pytest.raises(ValueError, match="keep_details"):
        pattern_agreement(nn.Identity(), [ref])


def test_trained_lcoan_shallow_pattern_at_depth():
    """The shipped LCoAN: its shallow LCoA's pattern on its own input agrees fully, deeper less."""
    net = pretrained("lcoan-small-x2")
    names = ["body.0.attention.0", "body.1.attention.0"]
    g = torch.Generator().manual_seed(0)
    feats = module_inputs(net, torch.rand(1, 3, 24, 24, generator=g), names)
    out = pattern_agreement(net.body[0].attention[0], feats, reference=0)
    assert out["code_agreement"][0] == 1 and out["pattern_overlap"][0] == 1
    assert 0 <= float(out["code_agreement"][1]) < 1 and 0 < float(out["pattern_overlap"][1]) < 1
