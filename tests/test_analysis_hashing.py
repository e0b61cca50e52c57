"""srlib.analysis.hashing: hash statistics, attention collected per position, Fig. 4 helpers, Fig. 1 study."""

import math

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from srlib.attention.gla import GlobalLearnableAttention  # noqa: E402
from srlib.attention.nlsa import NonLocalSparseAttention  # noqa: E402
from srlib.models.dlsn import DLSN, DLSNConfig  # noqa: E402
from srlib.analysis.buckets import lsh_collision_rate  # noqa: E402
from srlib.analysis.hashing import (  # noqa: E402
    HASH_METHODS,
    attention_on_positions,
    bucket_sizes,
    collision_probability,
    hash_codes,
    learnable_score_disabled,
    missing_detail,
    sign_bit_angle_estimates,
    similarity_and_detail_match,
    srp_angle_variance,
    topk_attended_locations,
)
from srlib.viz.maps import plot_attended_locations  # noqa: E402

# ----------------------------------------------------------------------------------------------- hashing


@pytest.mark.parametrize("method", HASH_METHODS)
def test_hash_codes_shapes_and_range(method):
    x = torch.randn(2, 30, 8, generator=torch.Generator().manual_seed(0))
    codes = hash_codes(x, 6, 3, method, generator=torch.Generator().manual_seed(1))
    assert codes.shape == (2, 3, 30) and codes.dtype == torch.int64
    assert int(codes.min()) >= 0 and int(codes.max()) < 6
    again = hash_codes(2.5 * x, 6, 3, method, generator=torch.Generator().manual_seed(1))
    assert torch.equal(codes, again)  # scale invariant and reproducible


def test_hash_codes_unknown_method():
    with pytest.raises(ValueError, match="method"):
        hash_codes(torch.randn(1, 4, 3), 4, 1, "kmeans")


@pytest.mark.parametrize("method", HASH_METHODS)
def test_collision_probability_endpoints_and_monotone(method):
    angles = [0.0, 0.5, 1.0, 1.5, math.pi]
    p = collision_probability(angles, 16, 8, 3000, method=method, generator=torch.Generator().manual_seed(0))
    assert p.shape == (5,) and p.dtype == torch.float64
    assert float(p[0]) == 1.0  # identical vectors always collide
    assert float(p[-1]) == 0.0  # opposite vectors never share an argmax bucket here
    assert all(a > b for a, b in zip(p[:-1].tolist(), p[1:].tolist()))


def test_collision_probability_spherical_equals_buckets_helper():
    angles = [0.3, 0.9]
    ours = collision_probability(angles, 8, 4, 500, method="spherical", generator=torch.Generator().manual_seed(3))
    theirs = lsh_collision_rate(angles, 8, 4, 500, generator=torch.Generator().manual_seed(3))
    assert torch.equal(ours, theirs)


def test_collision_probability_two_buckets_is_random_hyperplane():
    # [xR, -xR] with one direction: the sign of one Gaussian projection, P = 1 - theta / pi
    theta = torch.tensor([0.5, 1.5, 2.5], dtype=torch.float64)
    p = collision_probability(theta, 8, 2, 20000, method="spherical", generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(p, 1 - theta / math.pi, atol=0.015, rtol=0)


def test_sign_bit_estimates_unbiased_and_superbit_has_lower_variance():
    angles = [math.pi / 6, math.pi / 2, 2 * math.pi / 3]
    g = torch.Generator().manual_seed(0)
    srp = sign_bit_angle_estimates(angles, 16, 16, 4000, method="gaussian", generator=g)
    sb = sign_bit_angle_estimates(angles, 16, 16, 4000, method="superbit", generator=g)
    assert srp.shape == sb.shape == (3, 4000)
    truth = torch.tensor(angles, dtype=torch.float64)
    assert float((srp.mean(1) - truth).abs().max()) < 0.02
    assert float((sb.mean(1) - truth).abs().max()) < 0.02
    torch.testing.assert_close(srp.var(1), srp_angle_variance(angles, 16), rtol=0.08, atol=0)
    ratio = sb.var(1) / srp.var(1)  # measured about 0.84, 0.59, 0.64
    assert bool((ratio < 0.92).all()) and float(ratio[1]) < 0.7


def test_sign_bit_superbit_groups_and_errors():
    # K = 32 bits in 16 dims: two super-bits of depth 16
    est = sign_bit_angle_estimates([1.0], 16, 32, 10, method="superbit", generator=torch.Generator().manual_seed(0))
    assert est.shape == (1, 10)
    assert bool(((est >= 0) & (est <= math.pi)).all())
    with pytest.raises(ValueError, match="multiple"):
        sign_bit_angle_estimates([1.0], 16, 24, 10, method="superbit")
    with pytest.raises(ValueError, match="method"):
        sign_bit_angle_estimates([1.0], 16, 16, 10, method="orthogonal")
    with pytest.raises(ValueError, match="angles"):
        sign_bit_angle_estimates([4.0], 16, 16, 10)
    with pytest.raises(ValueError, match="dim"):
        collision_probability([1.0], 1, 4)


def test_srp_variance_formula():
    v = srp_angle_variance([0.0, math.pi / 2, math.pi], 4)
    torch.testing.assert_close(v, torch.tensor([0.0, math.pi**2 / 16, 0.0], dtype=torch.float64))


def test_bucket_sizes_counts():
    codes = torch.tensor([[[0, 1, 1, 3], [2, 2, 2, 2]]])  # (B=1, R=2, L=4)
    sizes = bucket_sizes(codes, 4)
    assert torch.equal(sizes, torch.tensor([[[1, 2, 0, 1], [0, 0, 4, 0]]]))
    assert torch.equal(bucket_sizes(codes[0], 4), sizes[0])
    with pytest.raises(ValueError, match="lie in"):
        bucket_sizes(codes, 3)
    with pytest.raises(ValueError, match="integer"):
        bucket_sizes(codes.float(), 4)


# ----------------------------------------------------------------------------------------------- attention


def _run(module, x, **kw):
    module.keep_details = True
    with torch.no_grad():
        out = module(x, **kw)
    return out, module.details


@pytest.mark.parametrize("lss,rounds", [("official", "official"), ("none", "official"), ("paper", "paper")])
def test_attention_on_positions_reconstructs_gla_output(lss, rounds):
    """y_p = sum_j A_pj v_j: the collected weights reproduce the block output exactly (padding included)."""
    torch.manual_seed(0)
    m = GlobalLearnableAttention(n_hashes=3, channels=16, reduction=2, chunk_size=12, res_scale=1.0,
                                 lss_variant=lss, round_weights=rounds).double().eval()
    x = torch.randn(1, 16, 7, 9, dtype=torch.float64)  # L = 63: 5 buckets, padding 9
    out, det = _run(m, x)
    with torch.no_grad():
        v = m.conv_assembly(x).flatten(2)[0].T  # (L, C)
    A = torch.stack([attention_on_positions(det, p) for p in range(63)])  # (L, L)
    y = (A @ v).T.reshape(1, 16, 7, 9)
    torch.testing.assert_close(y + x, out)
    if rounds == "official":
        torch.testing.assert_close(A.sum(1), torch.ones(63, dtype=torch.float64))
        assert bool((A >= 0).all())


def test_attention_on_positions_nlsa_and_one_chunk_is_dense():
    torch.manual_seed(1)
    m = NonLocalSparseAttention(n_hashes=2, channels=8, reduction=2, chunk_size=30, res_scale=1.0).double().eval()
    x = torch.randn(1, 8, 5, 6, dtype=torch.float64)  # L = 30 = one chunk: every query sees every key 3 times
    _, det = _run(m, x)
    with torch.no_grad():
        e = m.conv_match(x).flatten(2)[0].T  # (L, C')
    scores = e @ F.normalize(e, dim=-1, eps=5e-5).T
    dense = torch.softmax(scores, dim=-1)
    got = torch.stack([attention_on_positions(det, p) for p in range(30)])
    torch.testing.assert_close(got, dense)


def test_attention_on_positions_errors():
    torch.manual_seed(0)
    m = GlobalLearnableAttention(n_hashes=1, channels=8, reduction=2, chunk_size=10).eval()
    x = torch.randn(2, 8, 4, 5)
    with torch.no_grad():
        m(x)
    with pytest.raises(ValueError, match="keep_details"):
        attention_on_positions({}, 0)
    _, det = _run(m, x)
    with pytest.raises(ValueError, match="position"):
        attention_on_positions(det, 20)
    with pytest.raises(ValueError, match="batch"):
        attention_on_positions(det, 0, batch=2)
    assert attention_on_positions(det, 3, batch=1).shape == (20,)


def test_topk_attended_locations():
    w = torch.tensor([0.1, 0.5, 0.0, 0.3, 0.3, 0.2])  # (L = 6) on a 2 x 3 grid
    loc, val = topk_attended_locations(w, (2, 3), k=3)
    assert torch.equal(loc, torch.tensor([[0, 1], [1, 0], [1, 1]]))  # ties keep position order
    torch.testing.assert_close(val, torch.tensor([0.5, 0.3, 0.3]))
    with pytest.raises(ValueError, match="hw"):
        topk_attended_locations(w, (2, 2))
    with pytest.raises(ValueError, match="k must"):
        topk_attended_locations(w, (2, 3), k=7)
    with pytest.raises(ValueError, match=r"\(L,\)"):
        topk_attended_locations(w.view(2, 3), (2, 3))


def test_plot_attended_locations_scales_to_the_image():
    img = torch.rand(3, 40, 60)
    loc = torch.tensor([[0, 0], [9, 14]])
    fig = plot_attended_locations(img, (5, 5), {"a": loc, "b": loc[:1]}, (10, 15))
    ax = fig.axes[0]
    red = ax.collections[0].get_offsets()
    assert red.shape == (2, 2)
    # cell (y, x) of a 10 x 15 map centred on a 40 x 60 image: ((x + .5) * 4 - .5, (y + .5) * 4 - .5)
    assert tuple(red[1]) == pytest.approx((14.5 * 4 - 0.5, 9.5 * 4 - 0.5))
    assert len(fig.axes) == 2
    plt.close(fig)
    with pytest.raises(ValueError, match="panel"):
        plot_attended_locations(img, (0, 0), {})
    with pytest.raises(ValueError, match=r"\(k, 2\)"):
        plot_attended_locations(img, (0, 0), {"a": torch.zeros(3)})


def test_learnable_score_disabled_switches_off_and_restores():
    torch.manual_seed(0)
    net = DLSN(DLSNConfig.small(scale=2, chunk_size=16)).eval()
    x = torch.rand(1, 3, 8, 8)
    mods = [m for _, m in net.attention_modules()]

    def run():
        for i, m in enumerate(mods):
            m.generator = torch.Generator().manual_seed(i)
        with torch.no_grad():
            return net(x)

    on = run()
    with learnable_score_disabled(net) as names:
        assert names == [n for n, _ in net.attention_modules()]
        assert all(m.lss_variant == "none" for m in mods)
        off = run()
    assert all(m.lss_variant == "official" for m in mods)
    assert not torch.equal(on, off)
    torch.testing.assert_close(run(), on, rtol=0, atol=0)
    # equals a network built without the LSS branch, with the shared weights copied over
    plain = DLSN(DLSNConfig.small(scale=2, chunk_size=16, lss_variant="none")).eval()
    plain.load_state_dict({k: v for k, v in net.state_dict().items() if k in plain.state_dict()})
    for i, (_, m) in enumerate(plain.attention_modules()):
        m.generator = torch.Generator().manual_seed(i)
    with torch.no_grad():
        torch.testing.assert_close(plain(x), off)
    with pytest.raises(RuntimeError):  # restored on error too
        with learnable_score_disabled(net):
            raise RuntimeError("boom")
    assert all(m.lss_variant == "official" for m in mods)


# ----------------------------------------------------------------------------------------------- Fig. 1


def _stripes(size=48, period=6):
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    base = 0.5 + 0.4 * torch.sin(2 * math.pi * (xx + 0.5 * yy) / period)
    return torch.stack([base, 0.8 * base, 1 - base]).float()


def test_missing_detail_is_hr_minus_bicubic():
    from srlib.data import BicubicDownsample, imresize

    hr = _stripes()
    lr = BicubicDownsample(2)(hr)
    d = missing_detail(hr, lr, 2)
    assert d.shape == hr.shape
    torch.testing.assert_close(d, hr - imresize(lr, 2))
    with pytest.raises(ValueError, match="scale"):
        missing_detail(hr, lr, 3)


def test_similarity_and_detail_match():
    from srlib.data import BicubicDownsample

    hr = _stripes()
    lr = BicubicDownsample(2)(hr)  # (3, 24, 24)
    queries = torch.tensor([5 * 24 + 5, 12 * 24 + 12])
    sim, match = similarity_and_detail_match(hr, lr, 2, queries, patch_size=3, exclude_radius=1)
    assert sim.shape == match.shape == (2, 576)
    # the 3x3 neighbourhood of each query is excluded (NaN), everything else is a cosine
    assert int(sim[0].isnan().sum()) == 9 and bool(match[0].isnan().equal(sim[0].isnan()))
    ok = ~sim.isnan()
    assert bool((sim[ok].abs() <= 1 + 1e-5).all()) and bool((match[ok].abs() <= 1 + 1e-5).all())
    # a periodic image: the key one period to the right looks and fits exactly like the query
    # (the stripe pattern repeats every 3 LR pixels along x: period 6 HR pixels)
    key = 5 * 24 + 8
    assert float(sim[0, key]) == pytest.approx(1.0, abs=1e-4)
    assert float(match[0, key]) == pytest.approx(1.0, abs=1e-3)
    with pytest.raises(ValueError, match="queries"):
        similarity_and_detail_match(hr, lr, 2, [576])
    with pytest.raises(ValueError, match="patch_size"):
        similarity_and_detail_match(hr, lr, 2, [0], patch_size=4)
