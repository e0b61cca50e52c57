"""srlib.viz.explorer: per-query attention maps of the six mechanisms, the numbers the widget shows, the widget.

Every number :class:`AttentionExplorer` displays (keys carrying 90%, largest weight, support, bucket sizes,
reachable keys, round weights, ENLA's distance to the exact softmax) is checked here against an independent
computation: the module's own output, the dense softmax, or the bucket layout read directly.
"""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")

import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from srlib.attention.enla import enla  # noqa: E402
from srlib.attention.gla import GlobalLearnableAttention  # noqa: E402
from srlib.attention.hspa import HSPA  # noqa: E402
from srlib.attention.lcoa import LearnableCollaborativeAttention  # noqa: E402
from srlib.attention.nla import NonLocalAttention  # noqa: E402
from srlib.attention.nlsa import NonLocalSparseAttention  # noqa: E402
from srlib.attention.softthreshold import soft_threshold  # noqa: E402
from srlib.viz.explorer import (  # noqa: E402
    KNOBS,
    MECHANISMS,
    AttentionCache,
    AttentionExplorer,
    collect_attention_layers,
    default_knobs,
    demo_module,
    demo_scene,
    keys_carrying,
    module_knobs,
    prepare_attention,
    query_attention,
    settable_knobs,
)

H, W, C = 12, 14, 8  # L = 168 positions: not a multiple of the chunk sizes below (padding is exercised)
L = H * W
TAU = 0.05


@pytest.fixture
def feats() -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, C, H, W, generator=g, dtype=torch.float64)
    return F.normalize(x, dim=1)  # unit features: demo scores are cos / tau


def _seq(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(2).transpose(1, 2)[0]  # (L, C)


def _pos(yx) -> int:
    return yx[0] * W + yx[1]


# ------------------------------------------------------------------------------------------ keys_carrying
def test_keys_carrying_hand_made_rows():
    assert keys_carrying(torch.tensor([0.0, 1.0, 0.0])) == 1
    assert keys_carrying(torch.full((10,), 0.1)) == 9  # ceil(0.9 * 10)
    assert keys_carrying(torch.full((10,), 0.1), mass=1.0) == 10
    w = torch.tensor([0.125, 0.5, 0.125, 0.25])  # exact binary fractions: no rounding at the boundaries
    assert keys_carrying(w) == 4  # 0.5 + 0.25 + 0.125 = 0.875 < 0.9
    assert keys_carrying(w, mass=0.875) == 3
    assert keys_carrying(w, mass=0.5) == 1
    assert keys_carrying(w, mass=0.75) == 2
    assert keys_carrying(w, mass=0.76) == 3
    assert keys_carrying(w * 8.0, mass=0.75) == 2  # a fraction of the row's total, not of 1
    assert keys_carrying(w.view(2, 2), mass=0.75) == 2  # any shape: an (H, W) map works


@pytest.mark.parametrize(
    "weights, mass",
    [(torch.tensor([0.5, -0.1, 0.6]), 0.9), (torch.zeros(4), 0.9), (torch.ones(3), 0.0), (torch.ones(3), 1.5),
     (torch.zeros(0), 0.9)],
)
def test_keys_carrying_rejects_bad_input(weights, mass):
    with pytest.raises(ValueError):
        keys_carrying(weights, mass)


# ------------------------------------------------------------------------------------------ dense NLA / HSPA
def test_nla_row_equals_dense_softmax_row_and_module_map(feats):
    yx = (5, 9)
    r = query_attention("NLA", feats, yx, temperature=TAU)
    x = _seq(feats)
    expected = torch.softmax(x[_pos(yx)] @ x.T / TAU, dim=-1)  # NLSN Eq. 4 with theta = phi = x / sqrt(tau)
    torch.testing.assert_close(r["map"].double().view(-1), expected, rtol=1e-5, atol=1e-7)
    # the same row of the module's own L x L map
    m = demo_module("NLA", C, temperature=TAU).double()
    m.keep_map = True
    m(feats)
    torch.testing.assert_close(r["map"].double().view(-1), m.last_map[0, _pos(yx)], rtol=1e-5, atol=1e-7)
    assert r["bucket"] is None and r["candidates"] is None and r["bucket_size"] is None
    assert r["keys_for_90"] == keys_carrying(expected)
    assert r["support"] == int((r["map"] > 0).sum())
    assert r["max_weight"] == pytest.approx(float(expected.max()), rel=1e-5)
    assert r["query_yx"] == yx


@pytest.mark.parametrize("topk, mode", [(None, "exact"), (4, "exact"), (4, "truncated"), (32, "truncated")])
def test_hspa_row_equals_module_map_row(feats, topk, mode):
    yx = (0, 13)
    r = query_attention("HSPA", feats, yx, topk=topk, mode=mode)
    m = demo_module("HSPA", C, topk=topk, mode=mode).double()
    m.keep_map = True
    m(feats)
    torch.testing.assert_close(r["map"].double().view(-1), m.last_map[0, _pos(yx)], rtol=1e-5, atol=1e-7)
    assert r["support"] == int((m.last_map[0, _pos(yx)] > 0).sum())
    if mode == "truncated" and topk is not None:
        assert r["support"] <= topk


def test_hspa_knobs_change_the_map_only_where_they_should(feats):
    yx = (6, 6)
    full = query_attention("HSPA", feats, yx, topk=None, temperature=0.5)["map"]
    exact_k2 = query_attention("HSPA", feats, yx, topk=2, mode="exact", temperature=0.5)["map"]
    trunc_k2 = query_attention("HSPA", feats, yx, topk=2, mode="truncated", temperature=0.5)["map"]
    torch.testing.assert_close(exact_k2, full)  # official: top-k only changes the cost
    assert int((full > 0).sum()) > 2  # a temperature this high gives a support larger than 2 ...
    assert int((trunc_k2 > 0).sum()) <= 2 and not torch.allclose(trunc_k2, full)  # ... which truncation cuts


# ------------------------------------------------------------------------------------------ bucketed
def _effective_output(mechanism, state, feats):
    """Module output y_p (without residual) recomputed with the same random draws."""
    m = state.module
    d = state.details
    with torch.no_grad():
        if mechanism == "NLSA":
            out = m(feats, rotations=d["rotations"])
            v = m.conv_assembly(feats)
        elif mechanism == "GLA":
            out = m(feats, projections=d["projections"])
            v = m.conv_assembly(feats)  # includes the ReLU
        else:
            out, _ = m(feats)
            v = m.conv_assembly(feats)
    return _seq((out - feats) / m.res_scale), _seq(v)


def _module_details(mechanism, state, feats):
    """``details`` of the module's own ``keep_details`` forward pass, run here with the state's random draws."""
    m = state.module
    d = state.details
    m.keep_details = True
    try:
        with torch.no_grad():
            if mechanism == "NLSA":
                m(feats, rotations=d["rotations"])
            elif mechanism == "GLA":
                m(feats, projections=d["projections"])
            else:
                m(feats)
        return m.details
    finally:
        m.keep_details, m.details = False, None


def _round_weights(details):
    rw = details.get("round_weights")  # GLA keeps its own (official or Eq. 18); else NLSN Eq. 11
    return torch.softmax(details["bucket_score"], dim=1) if rw is None else rw


def _dense_bucketed_map(details):
    """The ``(L, L)`` weights ``A[p, j]`` a bucketed module applied, from its chunk weights ``score (1, R, n, c,
    3c)``, its sort order and round weights, walking the padded sorted order chunk by chunk."""
    layout, score = details["layout"], details["score"][0]
    R, n, c, _ = score.shape
    pad = layout.padding
    rw = _round_weights(details)
    A = torch.zeros(L, L, dtype=score.dtype)
    for r in range(R):
        order = layout.sort_idx[0, r]
        padded = torch.cat([order, order[L - pad:]])  # slot L + t holds a copy of slot L - pad + t
        for ch in range(n):
            keys = torch.cat([padded[k * c:(k + 1) * c] for k in (ch, (ch - 1) % n, (ch + 1) % n)])
            for i in range(c):
                if ch * c + i >= L:
                    continue  # a padded copy: its result is dropped
                q = int(order[ch * c + i])
                A[q].index_add_(0, keys, rw[0, r, q] * score[r, ch, i])
    return A


def _gla(lss_variant, round_weights="official"):
    torch.manual_seed(5)
    return GlobalLearnableAttention(n_hashes=2, channels=C, k_size=3, reduction=2, chunk_size=32,
                                    lss_variant=lss_variant, round_weights=round_weights).double()


@pytest.mark.parametrize(
    "mechanism, make, knobs",
    [("NLSA", None, {"n_hashes": 3, "chunk_size": 32}), ("NLSA", None, {"n_hashes": 1, "chunk_size": 48}),
     ("GLA", None, {"n_hashes": 2, "chunk_size": 48}), ("LCoA", None, {"n_clusters": 6, "window_size": 32}),
     ("GLA", lambda: _gla("official"), {}), ("GLA", lambda: _gla("paper"), {}),
     ("GLA", lambda: _gla("official", "paper"), {}), ("GLA", lambda: _gla("none", "paper"), {}),
     ("LCoA", lambda: LearnableCollaborativeAttention(channels=C, k_size=3, reduction=2, n_clusters=4,
                                                      window_size=40).double(), {})],
    ids=["nlsa", "nlsa-r1", "gla-demo", "lcoa-demo", "gla-lss-official", "gla-lss-paper", "gla-eq18",
         "gla-eq18-no-lss", "lcoa-given"],
)
def test_every_bucketed_row_equals_the_modules_full_map(feats, mechanism, make, knobs):
    # each row is recomputed from the layout alone; the full L x L map here comes from the module's own
    # forward pass (all chunk weights), with the same random draws
    state = prepare_attention(mechanism, feats, make() if make else None, seed=2, **knobs)
    dense = _dense_bucketed_map(_module_details(mechanism, state, feats))
    torch.testing.assert_close(dense.sum(1), torch.ones(L, dtype=dense.dtype))
    negative = 0
    for p in range(L):
        torch.testing.assert_close(state._bucketed_row(p)[0].double(), dense[p], rtol=1e-6, atol=1e-9)
        if bool((dense[p] < 0).any()):  # DLSN Eq. 18 with a learned term: round weights of either sign
            negative += 1
            with pytest.raises(ValueError, match="non-negative"):
                state.query((p // W, p % W))
        else:
            r = state.query((p // W, p % W))
            torch.testing.assert_close(r["map"].double().view(-1), dense[p], rtol=1e-6, atol=1e-9)
    assert negative == 0 or state.module.round_weights == "paper"
    assert not state.details.computed  # the rows never needed the chunk weights of all queries


def test_state_is_compact_and_the_forward_details_come_on_demand(feats):
    state = prepare_attention("GLA", feats, _gla("official"), seed=1)
    d = state.details
    assert not d.computed and "score" in d and "lss" in d  # listed, not computed
    held = [t for t in (state.q, state.extra["lss_features"], d["codes"], d["embedding"]) if t is not None]
    assert all(t.numel() <= L * C for t in held)  # O(L) numbers, no (R, n, c, 3c) weights
    own = _module_details("GLA", state, feats)
    assert torch.equal(d["score"], own["score"]) and torch.equal(d["lss"], own["lss"])  # first read: forward
    assert d.computed and torch.equal(d["codes"], own["codes"])
    assert set(d) >= {"codes", "layout", "projections", "n_buckets", "embedding", "score", "bucket_score", "lss",
                      "round_weights"}
    # a state prepared with the learnable score switched off keeps describing that scoring when read later
    from srlib.analysis.hashing import learnable_score_disabled

    gla = _gla("official")
    with learnable_score_disabled(gla):
        off = prepare_attention("GLA", feats, gla, seed=1)
    assert gla.lss_variant == "official" and off.details["lss"] is None
    dense = _dense_bucketed_map(off.details)  # the replayed forward pass, outside the block
    torch.testing.assert_close(off.query((3, 4))["map"].double().view(-1), dense[_pos((3, 4))])


@pytest.mark.parametrize(
    "mechanism, knobs",
    [("NLSA", {"n_hashes": 3, "chunk_size": 32}), ("GLA", {"n_hashes": 2, "chunk_size": 48}),
     ("LCoA", {"n_clusters": 6, "window_size": 32})],
)
def test_bucketed_map_reproduces_the_module_output(feats, mechanism, knobs):
    state = prepare_attention(mechanism, feats, **knobs)
    y, v = _effective_output(mechanism, state, feats)
    for yx in [(0, 0), (7, 3), (11, 13)]:
        r = state.query(yx)
        torch.testing.assert_close(r["map"].double().view(-1), r["map"].double().view(-1).clamp_min(0))
        assert float(r["map"].double().sum()) == pytest.approx(1.0, abs=1e-6)
        # y_p = sum_j map_j v_j: the map is exactly what the sparse attention applies to the values
        torch.testing.assert_close((r["map"].double().view(-1) @ v), y[_pos(yx)], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("mechanism, knobs", [("NLSA", {"n_hashes": 3, "chunk_size": 32}),
                                              ("GLA", {"n_hashes": 2, "chunk_size": 48}),
                                              ("LCoA", {"n_clusters": 6, "window_size": 32})])
def test_bucket_membership_and_candidates_match_the_layout(feats, mechanism, knobs):
    state = prepare_attention(mechanism, feats, **knobs)
    d = state.details
    layout, codes = d["layout"], d["codes"][0]
    R = codes.shape[0]
    c, n, pad = layout.chunk_size, layout.n_chunks, layout.padding
    yx = (4, 10)
    p = _pos(yx)
    r = state.query(yx)
    bucket = torch.zeros(L, dtype=torch.bool)
    cand = torch.zeros(L, dtype=torch.bool)
    sizes = []
    for rr in range(R):
        order = layout.sort_idx[0, rr]  # positions in sorted order
        sorted_codes = codes[rr, order]
        members = order[sorted_codes == codes[rr, p]]  # the query's run of equal codes
        sizes.append(members.numel())
        bucket[members] = True
        slot = int(layout.undo_idx[0, rr, p])
        own = slot // c
        padded = torch.cat([order, order[L - pad:]])  # slot L + t holds a copy of slot L - pad + t
        for ch in (own, (own - 1) % n, (own + 1) % n):
            cand[padded[ch * c:(ch + 1) * c]] = True
    assert torch.equal(r["bucket"].view(-1), bucket)
    assert r["bucket_sizes"] == sizes and r["bucket_size"] == int(bucket.sum())
    assert torch.equal(r["candidates"].view(-1), cand)
    assert r["n_candidates"] == int(cand.sum())
    assert bool(r["bucket"].view(-1)[p]) and bool(r["candidates"].view(-1)[p])
    assert not bool((r["map"].view(-1)[~cand] != 0).any())  # no weight outside the reachable keys
    # round weights: GLA's own, else softmax over rounds of the bucket scores (NLSN Eq. 11), both from the
    # module's own forward pass
    rw = _round_weights(_module_details(mechanism, state, feats))
    assert r["round_weights"] == pytest.approx([float(w) for w in rw[0, :, p]])
    assert sum(r["round_weights"]) == pytest.approx(1.0)


@pytest.mark.parametrize("n_hashes", [1, 3])
def test_nlsa_with_one_chunk_equals_dense(feats, n_hashes):
    # chunk_size = L: one chunk, every query sees every key (3 times: own, prev and next are the same chunk)
    yx = (9, 2)
    r = query_attention("NLSA", feats, yx, chunk_size=L, n_hashes=n_hashes)
    x = _seq(feats)
    k = F.normalize(x, dim=-1, eps=5e-5)
    dense = torch.softmax((x[_pos(yx)] / TAU) @ k.T, dim=-1)  # NLSN Eq. 9: q_i . k_j / |k_j|
    torch.testing.assert_close(r["map"].double().view(-1), dense, rtol=1e-5, atol=1e-7)
    assert r["n_candidates"] == L and r["support"] == L


def test_knobs_change_the_bucketed_maps(feats):
    yx = (3, 3)
    a = query_attention("NLSA", feats, yx, chunk_size=16, n_hashes=1)
    b = query_attention("NLSA", feats, yx, chunk_size=64, n_hashes=1)
    c = query_attention("NLSA", feats, yx, chunk_size=16, n_hashes=4)
    assert a["n_candidates"] < b["n_candidates"]
    assert not torch.allclose(a["map"], b["map"]) and not torch.allclose(a["map"], c["map"])
    assert len(c["round_weights"]) == 4 and len(a["round_weights"]) == 1
    k2 = query_attention("LCoA", feats, yx, n_clusters=2, window_size=16)
    k32 = query_attention("LCoA", feats, yx, n_clusters=32, window_size=16)
    assert k2["bucket_size"] > k32["bucket_size"]


def test_same_seed_same_map_other_seed_other_hash(feats):
    a = query_attention("NLSA", feats, (1, 1), chunk_size=16, seed=3)
    b = query_attention("NLSA", feats, (1, 1), chunk_size=16, seed=3)
    assert torch.equal(a["map"], b["map"])
    sa = prepare_attention("NLSA", feats, chunk_size=16, seed=3).details["codes"]
    sb = prepare_attention("NLSA", feats, chunk_size=16, seed=4).details["codes"]
    assert not torch.equal(sa, sb)


# ------------------------------------------------------------------------------------------ ENLA
def test_enla_row_is_the_random_feature_attention_and_exact_is_softmax(feats):
    state = prepare_attention("ENLA", feats, amplification=6.0, n_features=64)
    m = state.module
    q, k, v = (t[0] for t in m.embed(feats))
    y = enla(q, k, v, m.attn_fn.projection_matrix, eps=m.attn_fn.feature_eps)  # ENLCN Eqs. 4-6
    x = _seq(feats)
    for yx in [(0, 5), (11, 0)]:
        r = state.query(yx)
        p = _pos(yx)
        torch.testing.assert_close(r["map"].double().view(-1) @ v, y[p], rtol=1e-4, atol=1e-6)
        exact = torch.softmax(6.0 * (x[p] @ x.T), dim=-1)  # k cos: ENLCN Eq. 3 with identity embeddings
        torch.testing.assert_close(r["exact_map"].double().view(-1), exact, rtol=1e-5, atol=1e-7)
        tv = 0.5 * float((r["map"].double() - r["exact_map"].double()).abs().sum())
        assert r["tv_to_exact"] == pytest.approx(tv, rel=1e-6)
        assert float(r["map"].double().sum()) == pytest.approx(1.0, abs=1e-6)
    shown = prepare_attention("ENLA", feats, amplification=6.0, n_features=64, exact=True).query((0, 5))
    torch.testing.assert_close(shown["map"], shown["exact_map"])


def test_enla_more_random_features_approximate_better(feats):
    queries = [(y, x) for y in range(0, H, 3) for x in range(0, W, 3)]

    def mean_tv(m):
        s = prepare_attention("ENLA", feats, n_features=m, amplification=4.0)
        return sum(s.query(q)["tv_to_exact"] for q in queries) / len(queries)

    assert mean_tv(1024) < mean_tv(4)


def test_enla_amplification_sharpens(feats):
    lo = query_attention("ENLA", feats, (5, 5), amplification=1.0, exact=True)
    hi = query_attention("ENLA", feats, (5, 5), amplification=20.0, exact=True)
    assert hi["keys_for_90"] < lo["keys_for_90"] and hi["max_weight"] > lo["max_weight"]


# ------------------------------------------------------------------------------------------ modules given
def test_given_module_knob_overrides_are_temporary(feats):
    m = NonLocalSparseAttention(n_hashes=2, channels=C, k_size=3, reduction=2, chunk_size=64).double()
    state = prepare_attention("NLSA", feats, m, chunk_size=32, n_hashes=3)
    assert state.knobs == {"n_hashes": 3, "chunk_size": 32}
    assert state.details["layout"].chunk_size == 32 and state.details["codes"].shape[1] == 3
    assert (m.n_hashes, m.chunk_size, m.keep_details, m.details, m.generator) == (2, 64, False, None, None)
    m.n_hashes, m.chunk_size = 3, 32  # replay the call with the same knobs and rotations
    y, v = _effective_output("NLSA", state, feats)
    r = state.query((2, 2))
    torch.testing.assert_close(r["map"].double().view(-1) @ v, y[_pos((2, 2))], rtol=1e-4, atol=1e-6)


def test_given_module_fixed_knobs(feats):
    lcoa = LearnableCollaborativeAttention(channels=C, reduction=1, n_clusters=5, window_size=32,
                                           ema_update=True).double().train()
    prepare_attention("LCoA", feats, lcoa)  # initialises the centroids (official: first call) ...
    means = lcoa.kmeans.means.clone()
    prepare_attention("LCoA", feats, lcoa, window_size=16)  # ... but never moves them (run in eval mode)
    assert torch.equal(lcoa.kmeans.means, means) and lcoa.training
    assert "n_clusters" not in settable_knobs("LCoA", lcoa)
    assert module_knobs("LCoA", lcoa) == {"n_clusters": 5, "window_size": 32}
    with pytest.raises(ValueError, match="n_clusters"):
        prepare_attention("LCoA", feats, lcoa, n_clusters=8)
    assert prepare_attention("LCoA", feats, lcoa, window_size=16).query((1, 1))["knobs"]["window_size"] == 16
    gla = GlobalLearnableAttention(n_hashes=2, channels=C, reduction=2, chunk_size=32).double()
    assert settable_knobs("GLA", gla) == ("n_hashes",)  # the learnable score's MLP fixes the chunk size
    hspa = HSPA(channel=C, reduction=2, topk=8).double()
    hspa.keep_map = True
    r = prepare_attention("HSPA", feats, hspa, topk=4, mode="truncated").query((3, 3))
    assert (hspa.topk, hspa.mode) == (8, "exact")  # the module keeps its own normaliser
    q, k, _ = hspa.embed(feats)
    row = soft_threshold((q[0, _pos((3, 3))] @ k[0].T).view(1, -1), topk=4, mode="truncated")[0]
    torch.testing.assert_close(r["map"].double().view(-1), row, rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match="NonLocalSparseAttention"):
        prepare_attention("NLSA", feats, hspa)


def test_collect_attention_layers_skips_collaborative_modules():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.head = nn.Conv2d(3, 8, 3, padding=1)
            self.nla = NonLocalAttention(8, reduction=2)
            self.hspa = HSPA(8, reduction=2, topk=4)
            self.lcoa1 = LearnableCollaborativeAttention(channels=8, reduction=1, n_clusters=4, window_size=16)
            self.lcoa2 = LearnableCollaborativeAttention(channels=8, reduction=1, n_clusters=4, window_size=16)

        def forward(self, x):
            x = self.hspa(self.nla(self.head(x)))
            x, shared = self.lcoa1(x)
            x, _ = self.lcoa2(x, shared)
            return x

    net = Net().train()
    layers = collect_attention_layers(net, torch.rand(1, 3, 6, 7))
    assert net.training  # mode restored
    assert sorted(layers) == ["HSPA", "LCoA", "NLA"]
    assert [m for m, _ in layers["LCoA"]] == [net.lcoa1]
    assert layers["NLA"][0][0] is net.nla and layers["NLA"][0][1].shape == (1, 8, 6, 7)
    with pytest.raises(ValueError):
        collect_attention_layers(nn.Conv2d(3, 3, 1), torch.rand(1, 3, 4, 4))


# ------------------------------------------------------------------------------------------ errors, cache
def test_errors_name_the_offending_value(feats):
    with pytest.raises(ValueError, match="XLA"):
        query_attention("XLA", feats, (0, 0))
    with pytest.raises(ValueError, match="bogus"):
        query_attention("NLSA", feats, (0, 0), bogus=1)
    with pytest.raises(ValueError, match="outside"):
        query_attention("NLA", feats, (H, 0))
    with pytest.raises(ValueError, match="chunk_size"):
        query_attention("NLSA", feats, (0, 0), chunk_size=0)
    with pytest.raises(ValueError, match="features"):
        query_attention("NLA", feats[0], (0, 0))


def test_cache_computes_once_per_knob_setting(feats):
    cache = AttentionCache(maxsize=2)
    s1 = cache.get("NLSA", feats, chunk_size=32)
    for yx in [(0, 0), (1, 2), (5, 5)]:
        assert cache.get("NLSA", feats, chunk_size=32) is s1
        s1.query(yx)
    assert (cache.misses, cache.hits) == (1, 3)
    cache.get("NLSA", feats, chunk_size=16)
    cache.get("NLA", feats)
    assert cache.misses == 3 and len(cache) == 2  # the oldest setting was evicted
    assert cache.get("NLSA", feats, chunk_size=32) is not s1


def test_cache_evicts_by_bytes_before_computing(feats):
    cache = AttentionCache(maxsize=8, max_bytes=0)
    nla = cache.get("NLA", feats)
    assert len(cache) == 1 and cache.nbytes() >= 2 * L * C * 8  # q and k, float64 (L, C) each
    enla = cache.get("ENLA", feats, n_features=8)
    assert len(cache) == 1 and cache.get("ENLA", feats, n_features=8) is enla  # NLA went first
    assert cache.get("NLA", feats) is not nla and cache.misses == 3
    roomy = AttentionCache(maxsize=8)
    for m in ("NLA", "NLSA", "LCoA"):
        roomy.get(m, feats, **({"chunk_size": 32} if m == "NLSA" else {"window_size": 32} if m == "LCoA" else {}))
    assert len(roomy) == 3 and roomy.nbytes() > cache.nbytes()
    with pytest.raises(ValueError, match="max_bytes"):
        AttentionCache(max_bytes=-1)


def test_defaults_are_the_papers_values():
    assert default_knobs("NLSA") == {"n_hashes": 4, "chunk_size": 144}
    assert default_knobs("ENLA") == {"amplification": 6.0, "n_features": 128, "exact": False}
    assert default_knobs("HSPA") == {"topk": 128, "mode": "exact"}
    assert set(KNOBS) == set(MECHANISMS) and KNOBS["NLA"] == ()


# ------------------------------------------------------------------------------------------ widget
@pytest.fixture
def image() -> torch.Tensor:
    g = torch.Generator().manual_seed(2)
    base = torch.rand(3, 6, 6, generator=g)
    return base.repeat(1, 4, 4)  # (3, 24, 24): a repeated texture, so that non-local matches exist


def test_widget_builds_headless_and_shows_the_functions_numbers(image):
    ex = AttentionExplorer(image, query=(10, 7))
    s = ex.state()
    assert s["mechanism"] == "NLA" and s["query_yx"] == (10, 7) and s["error"] is None
    ref = query_attention("NLA", ex.features, (10, 7))
    assert s["keys_for_90"] == ref["keys_for_90"] and s["max_weight"] == pytest.approx(ref["max_weight"])
    assert ex.picture.value[:8] == b"\x89PNG\r\n\x1a\n"
    assert f">{ref['keys_for_90']}</b>" in ex.stats.value

    before, png = ex.state(), ex.picture.value
    ex.controls["x"].value = 8
    after = ex.state()
    assert after["query_yx"] == (10, 8) and after != before and ex.picture.value != png
    assert ex.cache.misses == 1  # moving the query did not recompute the mechanism

    ex.controls["mechanism"].value = "NLSA"
    ex._knob_widgets["NLSA"]["chunk_size"].value = 64
    s = ex.state()
    ref = query_attention("NLSA", ex.features, (10, 8), chunk_size=64, n_hashes=4)
    assert s["knobs"] == {"n_hashes": 4, "chunk_size": 64}
    assert (s["keys_for_90"], s["bucket_size"], s["n_candidates"]) == (
        ref["keys_for_90"], ref["bucket_size"], ref["n_candidates"])
    assert s["round_weights"] == pytest.approx(ref["round_weights"])
    assert "bucket size" in ex.stats.value

    ex._knob_widgets["NLSA"]["chunk_size"].value = 48
    assert ex.state()["knobs"]["chunk_size"] == 48 and ex.error is None


def test_widget_knobs_errors_and_click(image):
    ex = AttentionExplorer(image[:, :12, :12], mechanisms=("HSPA", "NLSA", "ENLA"), query=(3, 3),
                           knobs={"NLSA": {"chunk_size": 40, "n_hashes": 2}, "HSPA": {"topk": 3}})
    assert ex.knobs() == {"topk": 3, "mode": "exact"}  # 3 is not among the options: added to them
    with pytest.raises(ValueError, match="bogus"):
        AttentionExplorer(image, mechanisms=("NLSA",), knobs={"NLSA": {"bogus": 1}})
    with pytest.raises(ValueError, match="GLA"):
        AttentionExplorer(image, mechanisms=("NLSA",), knobs={"GLA": {"n_hashes": 1}})
    ex._knob_widgets["HSPA"]["topk"].value = -1  # "all"
    assert ex.knobs() == {"topk": None, "mode": "exact"}
    ex.controls["mechanism"].value = "NLSA"
    assert ex.state()["knobs"] == {"n_hashes": 2, "chunk_size": 40} and len(ex.state()["round_weights"]) == 2
    ex._knob_widgets["NLSA"]["chunk_size"].value = 256  # > L = 144: one padded chunk (the small-map rule)
    assert ex.error is None and ex.result is not None

    def rejected():
        raise ValueError("NLSA: chunk_size must be positive, got 0")

    ex.compute = rejected  # a knob value the mechanism rejects: reported, not raised
    ex._knob_widgets["NLSA"]["chunk_size"].value = 48
    assert ex.error is not None and "chunk_size" in ex.error and "cannot compute" in ex.stats.value
    assert ex.result is None and "keys_for_90" not in ex.state()
    del ex.compute
    ex._knob_widgets["NLSA"]["chunk_size"].value = 32
    assert ex.error is None
    ex.controls["mechanism"].value = "ENLA"
    ex._knob_widgets["ENLA"]["exact"].value = True
    s = ex.state()
    assert s["knobs"]["exact"] is True and s["tv_to_exact"] is not None
    # a click (ipyevents: PNG pixels from the top left) on the map panel inside cell (y=8, x=2) moves the
    # query there, and the picture then shows the map panel's cyan cross on that very pixel
    px, py = ex._picture.pixel_of((8, 2), panel=1)
    ex._on_click({"type": "click", "dataX": round(px), "dataY": round(py)})
    assert ex.query_yx == (8, 2)
    assert tuple(_png_pixels(ex.picture.value)[round(py), round(px)]) == (0, 255, 255)
    px, py = ex._picture.pixel_of((3, 11), panel=0)  # the image panel works too
    ex._on_click({"type": "click", "dataX": round(px), "dataY": round(py)})
    assert ex.query_yx == (3, 11)
    assert tuple(_png_pixels(ex.picture.value)[round(py), round(px)]) == (255, 0, 0)
    ex._on_click({"type": "click", "dataX": 1, "dataY": 1})  # the title strip: nothing happens
    ex._on_click({"type": "click"})
    assert ex.query_yx == (3, 11)


def _png_pixels(png: bytes):
    import io

    import numpy as np
    from PIL import Image

    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)


def test_picture_shows_the_map_bucket_and_query(image):
    import numpy as np
    from matplotlib import colormaps

    ex = AttentionExplorer(image, mechanisms=("NLSA", "NLA"), query=(5, 17), knobs={"NLSA": {"chunk_size": 48}})
    g = ex._picture.grid
    s, (ph, pw) = g["scale"], g["size"]
    assert (ph, pw) == (24 * s, 24 * s) and s == round(3.6 * 80 / 24)  # integer pixels per grid cell
    px = _png_pixels(ex.picture.value)
    (x0, y0), (x1, _) = g["origins"]
    assert px.shape == (y0 + ph + 4, x1 + pw + 4, 3) and x1 >= px.shape[1] // 2  # the map: the right half
    r = ex.result
    amap, bucket = r["map"].double(), r["bucket"]
    grey = np.asarray(g["rgb"]) @ np.array([0.299, 0.587, 0.114])
    far = [(y, x) for y in range(24) for x in range(24) if abs(y - 5) > 2 or abs(x - 17) > 2]  # off the crosses
    for y, x in far[::7]:
        cy, cx = y0 + y * s + s // 2, x0 + x * s + s // 2  # inside the cell, off its outline
        t = 0.45 if bool(bucket[y, x]) else 0.0  # the bucket tinted cyan
        expected = np.asarray(g["rgb"])[y, x] * (1 - t) + np.array([0.0, 255.0, 255.0]) * t
        assert np.abs(px[cy, cx] - expected).max() <= 1.0, (y, x)
    y, x = divmod(int(amap.argmax()), 24)  # the largest weight: the top colour of inferno over the grey image
    if abs(y - 5) > 2 or abs(x - 17) > 2:
        top = np.asarray(colormaps["inferno"](1.0)[:3]) * 255 * 0.75 + 0.25 * grey[y, x]
        cy, cx = y0 + y * s + s // 2, x1 + x * s + s // 2
        assert np.abs(px[cy, cx] - top).max() <= 1.5
    zero = [(y, x) for y, x in far if float(amap[y, x]) == 0.0][0]  # no weight: the darkest colour
    cy, cx = y0 + zero[0] * s + s // 2, x1 + zero[1] * s + s // 2
    dark = np.asarray(colormaps["inferno"](0.0)[:3]) * 255 * 0.75 + 0.25 * grey[zero]
    assert np.abs(px[cy, cx] - dark).max() <= 1.5
    # the crosses at the query, red on the image, cyan on the map
    for panel, colour in ((0, (255, 0, 0)), (1, (0, 255, 255))):
        qx, qy = ex._picture.pixel_of((5, 17), panel)
        assert tuple(px[round(qy), round(qx)]) == colour
    # a query move redraws the map panel in place: same size, other pixels
    ex.controls["y"].value = 18
    after = _png_pixels(ex.picture.value)
    assert after.shape == px.shape and (np.abs(after[:, x1:] - px[:, x1:]).sum(-1) > 30).mean() > 0.01
    ex.controls["mechanism"].value = "NLA"  # no bucket: the image panel is the plain image
    left = _png_pixels(ex.picture.value)[y0:y0 + ph, x0:x0 + pw]
    plain = np.asarray(g["rgb8"]).repeat(s, 0).repeat(s, 1)
    assert (np.abs(left - plain).sum(-1) > 0).mean() < 0.02  # all but the cross


def test_cache_shares_what_a_knob_does_not_change(feats):
    cache = AttentionCache()
    approx = cache.get("ENLA", feats, n_features=16)
    exact = cache.get("ENLA", feats, n_features=16, exact=True)
    assert (cache.misses, exact.phi_k is approx.phi_k, exact.knobs["exact"], approx.knobs["exact"]) == (
        1, True, True, False)
    torch.testing.assert_close(exact.query((2, 3))["map"], exact.query((2, 3))["exact_map"])
    # a demo LCoA keeps its centroids when only the window changes: the same maps as fresh modules
    first = cache.get("LCoA", feats, n_clusters=6, window_size=32)
    other = cache.get("LCoA", feats, n_clusters=6, window_size=16)
    default = cache.get("LCoA", feats, n_clusters=6)
    assert other.module is first.module and default.knobs == {"n_clusters": 6, "window_size": 144}
    for state, window in ((other, 16), (default, 144), (first, 32)):
        fresh = prepare_attention("LCoA", feats, n_clusters=6, window_size=window)
        assert state.knobs == fresh.knobs and torch.equal(state.details["codes"], fresh.details["codes"])
        for yx in [(0, 0), (6, 9)]:
            assert torch.equal(state.query(yx)["map"], fresh.query(yx)["map"])
    assert cache.get("LCoA", feats, n_clusters=4, window_size=16).module is not first.module


def test_widget_with_layer_modules_and_image_sources(tmp_path, image):
    from srlib.data import save_image

    feats = F.normalize(torch.randn(1, C, 12, 12, generator=torch.Generator().manual_seed(0)), dim=1)
    lcoa = [LearnableCollaborativeAttention(channels=C, reduction=1, n_clusters=k, window_size=32) for k in (3, 5)]
    path = tmp_path / "mine.png"
    save_image(image, path)
    hspa = HSPA(channel=C, reduction=2, topk=3, mode="truncated")
    ex = AttentionExplorer(path, features=feats, mechanisms=("LCoA", "NLA", "HSPA"),
                           layer_modules={"LCoA": lcoa, "HSPA": [(hspa, feats * 2.0)]})
    assert ex.controls["layer"].max == 1
    assert ex._knob_widgets["LCoA"]["n_clusters"].disabled and ex.state()["knobs"] == {"window_size": 32}
    assert ex._knob_widgets["LCoA"]["n_clusters"].value == 3
    ex.controls["layer"].value = 1
    assert ex._knob_widgets["LCoA"]["n_clusters"].value == 5 and ex.error is None
    assert ex.state()["bucket_size"] >= 1
    ex.controls["mechanism"].value = "HSPA"  # a module's knob values outside the options are added to them
    assert ex.knobs() == {"topk": 3, "mode": "truncated"} and ex.controls["layer"].layout.display == "none"
    ref = prepare_attention("HSPA", feats * 2.0, hspa).query(ex.query_yx)
    assert ex.state()["keys_for_90"] == ref["keys_for_90"] and ex.state()["support"] <= 3
    with pytest.raises(FileNotFoundError, match="nothing_here"):
        AttentionExplorer(tmp_path / "nothing_here.png")
    with pytest.raises(ValueError, match="XLA"):
        AttentionExplorer(image, mechanisms=("XLA",))
    sample = AttentionExplorer("chelsea", mechanisms=("HSPA",), max_positions=24 * 24)  # a bundled photograph
    assert sample.image.shape == (3, 300, 451) and sample.features.shape[-2:] == (19, 29)
    assert sample.state()["support"] >= 1
    big = AttentionExplorer(torch.rand(3, 40, 50), max_positions=400)
    assert big.features.shape[-2] * big.features.shape[-1] <= 400
    assert math.isclose(big.state()["map_sum"], 1.0, abs_tol=1e-5)


def test_demo_scene_offline_fallback(monkeypatch, tmp_path):
    monkeypatch.setenv("SRLIB_DATA", str(tmp_path))  # no benchmark here: the bundled brick wall
    image, what = demo_scene(32)
    assert image.shape == (3, 32, 32) and 0 <= float(image.min()) and float(image.max()) <= 1
    assert "brick" in what
    with pytest.raises(ValueError):
        demo_scene(4)


def test_demo_scene_benchmark(data_root):
    image, what = demo_scene(64)
    assert image.shape == (3, 64, 64) and "Urban100 img_014" in what


def test_temperature_slider_sharpens_and_flattens_the_demo_maps(image):
    """Issue 13 item 8: the softmax temperature is a control; it changes the demo modules' maps exactly as
    query_attention with that temperature, and is disabled for given (trained) modules."""
    ex = AttentionExplorer(image, mechanisms=("NLA", "HSPA"), query=(10, 7))
    assert ex.state()["temperature"] == 0.05 and not ex.controls["temperature"].disabled
    sharp = ex.state()
    ex.controls["temperature"].value = 0.5
    flat = ex.state()
    ref = query_attention("NLA", ex.features, (10, 7), temperature=0.5)
    assert flat["temperature"] == 0.5 and flat["max_weight"] == pytest.approx(ref["max_weight"])
    assert flat["keys_for_90"] == ref["keys_for_90"] > sharp["keys_for_90"]
    assert flat["max_weight"] < sharp["max_weight"]
    nla = NonLocalAttention(channel=ex.module_features.shape[1], reduction=1)
    given = AttentionExplorer(image, mechanisms=("NLA",), layer_modules={"NLA": nla})
    assert given.controls["temperature"].disabled


def test_displayed_explorer_stores_a_static_picture_next_to_the_widget(image):
    """Issue 21.5 / 23.1: where no kernel runs (GitHub, nbviewer, the course site) a saved notebook shows the
    stored image/png, not the widget's ``VBox(children=...)`` text; with a kernel the widget view is there."""
    import base64
    import io

    import numpy as np
    from IPython.core.formatters import DisplayFormatter
    from PIL import Image

    ex = AttentionExplorer(image, mechanisms=("NLA", "NLSA"), query=(10, 7))
    data, _ = DisplayFormatter().format(ex)  # what IPython stores in the notebook for ``explorer`` / display()
    assert set(data) == {"text/plain", "image/png", "application/vnd.jupyter.widget-view+json"}
    assert data["application/vnd.jupyter.widget-view+json"]["model_id"] == ex.widget.model_id
    assert data["text/plain"] == AttentionExplorer.STATIC_TEXT and "VBox" not in data["text/plain"]

    png = base64.b64decode(data["image/png"], validate=True)
    shown = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    view = np.asarray(Image.open(io.BytesIO(ex.render_png())).convert("RGB"))
    assert shown.shape[1] == view.shape[1] and shown.shape[0] > view.shape[0]  # the view, a caption under it
    np.testing.assert_array_equal(shown[: view.shape[0]], view)  # exactly the picture the widget shows
    caption = shown[view.shape[0]:]
    assert (caption < 128).any() and (caption == 255).mean() > 0.5  # dark text on white

    ex.controls["x"].value = 3  # displayed later: the picture of the view at that time
    again = np.asarray(Image.open(io.BytesIO(base64.b64decode(DisplayFormatter().format(ex)[0]["image/png"]))))
    assert again.shape == shown.shape and (again != shown).any()

    ex.result = None  # nothing to draw (a failed computation): the widget and the text only, no picture
    assert set(ex._repr_mimebundle_()) == {"text/plain", "application/vnd.jupyter.widget-view+json"}
