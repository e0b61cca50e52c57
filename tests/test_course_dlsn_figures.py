"""srlib.course.dlsn.figures: the figures of notebook 03 draw what they are given and refuse mismatched sizes."""

import math

import matplotlib

matplotlib.use("Agg")

import pytest  # noqa: E402
import torch  # noqa: E402

from srlib.course.dlsn.figures import (plot_chunk_scores, plot_degradations, plot_detail_fit,  # noqa: E402
                                         plot_hashing_comparison)


def test_plot_detail_fit_marks_query_and_both_sets():
    import matplotlib.pyplot as plt

    g = torch.Generator().manual_seed(0)
    hr, damage = torch.rand(3, 32, 40, generator=g), torch.rand(8, 10, generator=g)
    sim, fit = torch.rand(80, generator=g), torch.rand(80, generator=g)
    sim[5] = fit[5] = math.nan
    fig = plot_detail_fit(hr, damage, sim, fit, query=5, scale=4, k=4)
    ax0, _, ax2 = fig.axes[:3]
    sizes = [len(c.get_offsets()) for c in ax0.collections]
    assert sizes == [4, 4, 1]  # best fit, most similar, the query
    assert len(ax2.collections[0].get_offsets()) == 79  # every valid key in the scatter
    plt.close(fig)
    with pytest.raises(ValueError, match="hr must be"):
        plot_detail_fit(hr[:, :30], damage, sim, fit, 5, 4)
    with pytest.raises(ValueError, match="similarity and fit"):
        plot_detail_fit(hr, damage, sim[:70], fit, 5, 4)


def test_plot_hashing_comparison_draws_one_line_per_curve():
    import matplotlib.pyplot as plt

    angles = torch.linspace(0.2, 3.0, 5)
    est = {"gaussian": torch.rand(5, 10), "superbit": torch.rand(5, 10)}
    coll = {"superbit": torch.rand(7), "spherical": torch.rand(7)}
    fig = plot_hashing_comparison(angles, angles * (math.pi - angles) / 16, est, torch.linspace(0, 3, 7), coll,
                                  n_bits=16, dim=16, n_buckets=8)
    assert len(fig.axes[0].lines) == 3 and len(fig.axes[1].lines) == 2
    assert fig.axes[1].get_legend().get_texts()[0].get_text() == "super-bit argmax (GLA)"
    plt.close(fig)


def test_plot_chunk_scores_checks_the_chunk_shape():
    import matplotlib.pyplot as plt

    c = 4
    mats = {k: torch.rand(c, 3 * c) for k in ("s_f", "s_l", "s_l_centred", "weights")}
    fig = plot_chunk_scores({**mats, "slot": 1})
    assert [ax.get_title() for ax in fig.axes[:4]][0] == "s_f (dot product)"
    plt.close(fig)
    with pytest.raises(ValueError, match=r"\(c, 3c\)"):
        plot_chunk_scores({**mats, "s_f": torch.rand(c, c), "slot": 0})


def test_plot_degradations_one_panel_per_lr_and_titles():
    import matplotlib.pyplot as plt

    hr = torch.rand(3, 48, 48)
    lrs = {"BI": torch.rand(3, 16, 16), "BD": torch.rand(3, 16, 16)}
    fig = plot_degradations(hr, lrs, {"BI": 30.123, "BD": 25.0}, hr_box=(0, 0, 40), lr_box=(2, 2, 12))
    assert len(fig.axes) == 3 and fig.axes[0].get_title() == "HR (crop)"
    assert fig.axes[1].get_title() == "BI\nbicubic-up PSNR 30.12 dB"
    assert fig.axes[2].images[0].get_array().shape[:2] == (12, 12)
    plt.close(fig)
    with pytest.raises(ValueError, match=r"no value for \['BD'\]"):
        plot_degradations(hr, lrs, {"BI": 1.0})
    with pytest.raises(ValueError, match="outside BI"):
        plot_degradations(hr, lrs, {"BI": 1.0, "BD": 1.0}, hr_box=(0, 0, 40), lr_box=(10, 10, 12))


def test_largest_buckets_grid_ranks_by_size():
    from srlib.course.dlsn.figures import largest_buckets_grid

    codes = torch.tensor([5, 5, 5, 2, 2, 9, 7, 7, 7, 7, 1, 3])  # sizes: 7 -> 4, 5 -> 3, 2 -> 2, then 1s
    grid, sizes = largest_buckets_grid(codes, (3, 4), n_show=3)
    assert sizes == [4, 3, 2]
    assert grid.flatten().tolist() == [1, 1, 1, 2, 2, -1, 0, 0, 0, 0, -1, -1]
    with pytest.raises(ValueError, match="H \\* W"):
        largest_buckets_grid(codes, (4, 4))
    with pytest.raises(ValueError, match="n_show"):
        largest_buckets_grid(codes, (3, 4), n_show=0)


def test_plot_largest_buckets_titles_give_occupancy():
    import matplotlib.pyplot as plt

    from srlib.course.dlsn.figures import plot_largest_buckets

    codes = torch.tensor([0] * 9 + [1, 2, 3])
    fig = plot_largest_buckets(torch.rand(3, 3, 4), {"a": codes, "b": torch.arange(12)}, (3, 4), n_show=2)
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[1] == "a: 4 buckets,\nlargest 75% of the positions" and titles[2].startswith("b: 12 buckets")
    plt.close(fig)
    with pytest.raises(ValueError, match="n_show"):
        plot_largest_buckets(torch.rand(3, 3, 4), {"a": codes}, (3, 4), n_show=11)
