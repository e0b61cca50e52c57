"""srlib.viz.buckets: bucket maps, attended positions, LSH collision rates and the plotting helpers."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from srlib.attention.buckets import BucketLayout, bucketed_attention, look_around  # noqa: E402
from srlib.analysis.buckets import attended_keys, attended_mask, bucket_map, lsh_collision_rate  # noqa: E402
from srlib.viz.buckets import bucket_colormap, plot_attended, plot_bucket_map, plot_chunks, plot_hash_sectors  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def test_bucket_map_row_major():
    codes = torch.arange(2 * 12).reshape(2, 12) % 5
    m = bucket_map(codes, (3, 4))
    assert m.shape == (2, 3, 4)
    assert m[1, 2, 3] == codes[1, 2 * 4 + 3]
    assert bucket_map(codes[None], (4, 3)).shape == (1, 2, 4, 3)


def test_bucket_map_errors():
    with pytest.raises(ValueError, match="L = 12"):
        bucket_map(torch.zeros(2, 12, dtype=torch.long), (5, 5))
    with pytest.raises(ValueError, match="integer"):
        bucket_map(torch.zeros(2, 12), (3, 4))


@pytest.mark.parametrize("L, chunk", [(20, 6), (24, 6), (23, 8), (10, 10)])
def test_attended_mask_matches_the_keys_bucketed_attention_uses(L, chunk):
    g = torch.Generator().manual_seed(L)
    codes = torch.randint(0, 3, (2, 2, L), generator=g)
    layout = BucketLayout.from_codes(codes, chunk)
    # Independent path: carry each position's index through the same to_chunks + look_around as the keys.
    pos = torch.arange(L, dtype=torch.float64).view(1, L, 1).expand(2, L, 1)
    keys = look_around(layout.to_chunks(pos))[..., 0].long()  # (B, R, n, 3c)
    for p in (0, L // 2, L - 1):
        mask = attended_mask(layout, p)
        assert mask.shape == (2, 2, L) and mask.dtype == torch.bool
        for b in range(2):
            for r in range(2):
                chunk_of_p = int(layout.undo_idx[b, r, p]) // chunk
                expected = set(keys[b, r, chunk_of_p].tolist())
                assert set(torch.nonzero(mask[b, r]).flatten().tolist()) == expected
                assert mask[b, r, p]  # a query always sees itself


def test_attended_keys_of_many_queries_are_where_bucketed_attention_puts_weight():
    g = torch.Generator().manual_seed(2)
    L, chunk = 29, 6  # padded: 29 -> 30
    q = torch.randn(2, L, 4, generator=g, dtype=torch.float64)
    codes = torch.randint(0, 3, (2, 3, L), generator=g)
    layout = BucketLayout.from_codes(codes, chunk)
    res = bucketed_attention(q, torch.eye(L, dtype=torch.float64).expand(2, L, L), layout)  # one-hot values
    positions = [0, 5, 17, 28]
    keys = attended_keys(layout, torch.tensor(positions))
    assert keys.shape == (2, 3, 4, 3 * chunk) and keys.dtype == torch.int64
    for b in range(2):
        for r in range(3):
            for i, p in enumerate(positions):
                assert set(keys[b, r, i].tolist()) == set(torch.nonzero(res.ret[b, r, p] > 0).flatten().tolist())
    with pytest.raises(ValueError, match=r"\[0, 29\)"):
        attended_keys(layout, [29])
    with pytest.raises(ValueError, match="non-empty"):
        attended_keys(layout, [])


def test_attended_mask_weights_are_positive_exactly_there():
    g = torch.Generator().manual_seed(1)
    L, chunk = 30, 8
    q = torch.randn(1, L, 4, generator=g, dtype=torch.float64)
    codes = torch.randint(0, 4, (1, 1, L), generator=g)
    layout = BucketLayout.from_codes(codes, chunk)
    # Values = one-hot positions: the output of query p is its attention weight on every position.
    res = bucketed_attention(q, torch.eye(L, dtype=torch.float64)[None], layout)
    for p in range(L):
        assert torch.equal(res.ret[0, 0, p] > 0, attended_mask(layout, p)[0, 0])


def test_attended_mask_bad_position():
    layout = BucketLayout.from_codes(torch.zeros(1, 1, 10, dtype=torch.long), 5)
    with pytest.raises(ValueError, match="position"):
        attended_mask(layout, 10)


def test_collision_rate_hyperplane_case():
    # m = 2 with the official [xR, -xR] hash is the sign of one Gaussian projection: P = 1 - theta/pi.
    angles = torch.linspace(0, math.pi, 7)
    g = torch.Generator().manual_seed(0)
    rate = lsh_collision_rate(angles, 8, 2, 4000, generator=g)
    expected = 1 - angles.double() / math.pi
    torch.testing.assert_close(rate, expected, atol=0.03, rtol=0)
    assert rate[0] == 1.0 and rate[-1] == 0.0


def test_collision_rate_decreases_with_angle_and_buckets():
    g = torch.Generator().manual_seed(0)
    angles = [0.2, 0.8, 1.6]
    r8 = lsh_collision_rate(angles, 16, 8, 3000, generator=g)
    r32 = lsh_collision_rate(angles, 16, 32, 3000, generator=g)
    assert r8[0] > r8[1] > r8[2]
    assert (r32 < r8).all()
    with pytest.raises(ValueError, match="dim"):
        lsh_collision_rate(angles, 1, 2)


def test_collision_rate_reproducible():
    a = lsh_collision_rate([0.5], 4, 4, 100, generator=torch.Generator().manual_seed(3))
    b = lsh_collision_rate([0.5], 4, 4, 100, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


def test_colormap_size():
    assert bucket_colormap(70).N == 70
    with pytest.raises(ValueError):
        bucket_colormap(0)


def test_plot_hash_sectors_colours_match_codes():
    R = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # directions e1, e2 -> 4 quadrant-like sectors
    ax = plot_hash_sectors(R, torch.tensor([[1.0, 0.1], [-0.2, -1.0]]))
    assert len(ax.collections) == 1  # the scattered points
    with pytest.raises(ValueError, match=r"\(2, M\)"):
        plot_hash_sectors(torch.zeros(3, 2))


def test_plot_chunks_draws_padded_slots():
    codes = torch.tensor([2, 0, 1, 0, 2, 1, 1, 0, 2, 0, 1])  # L = 11, chunk 4 -> padding 1
    ax = plot_chunks(codes, 4, query=5)
    hatched = [p for p in ax.patches if p.get_hatch()]
    assert len(hatched) == 1
    with pytest.raises(ValueError, match="query"):
        plot_chunks(codes, 4, query=11)
    with pytest.raises(ValueError, match="1-D"):
        plot_chunks(codes.view(1, -1), 4)


def test_plot_bucket_map_and_attended():
    img = torch.rand(3, 16, 24)
    codes = torch.randint(0, 6, (1, 3, 8 * 12))
    fig = plot_bucket_map(img, codes, (8, 12))
    assert len(fig.axes) == 4
    layout = BucketLayout.from_codes(codes, 16)
    fig = plot_attended(img, layout, (3, 5), (8, 12))
    assert len(fig.axes) == 4  # 3 rounds + union
    with pytest.raises(ValueError, match="positions"):
        plot_bucket_map(img, codes, (8, 8))
    with pytest.raises(ValueError, match="outside"):
        plot_attended(img, layout, (8, 0), (8, 12))
    with pytest.raises(ValueError, match="RGB"):
        plot_bucket_map(torch.rand(2, 16, 24), codes, (8, 12))
