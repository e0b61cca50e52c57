"""srlib.data.scenes: the notebooks' demo scenes, with and without the benchmark data."""

from __future__ import annotations

import pytest
import torch

from srlib.data import imresize, load_image
from srlib.data.scenes import demo_scene, query_scene


@pytest.mark.parametrize("size, n_queries", [(56, 4), (64, 3)])
def test_query_scene_offline_is_the_brick_wall_with_its_queries(monkeypatch, tmp_path, size, n_queries):
    monkeypatch.setenv("SRLIB_DATA", str(tmp_path))  # no benchmark data there
    scene = query_scene(size)
    assert scene.image.shape == (3, size, size) and 0 <= float(scene.image.min()) and float(scene.image.max()) <= 1
    assert "brick" in scene.description and len(scene.queries) == len(scene.query_names) == n_queries
    assert all(0 <= r < size and 0 <= c < size for r, c in scene.queries)
    import skimage.data
    from pathlib import Path

    brick = load_image(Path(skimage.data.__file__).parent / "brick.png", allow_gray=True)
    side = 4 * size
    assert torch.equal(scene.image, imresize(brick[:, :side, :side], 0.25).clamp(0, 1))


def test_query_scene_with_the_data_is_the_facade(data_root):
    scene = query_scene(56)
    assert scene.description.startswith("Urban100 img_014") and scene.query_names[0] == "window"
    assert scene.image.shape == (3, 56, 56)
    # the 64 x 64 query scene is demo_scene's crop, shrunk by the same factor
    big, what = demo_scene(64)
    assert "img_014" in what
    torch.testing.assert_close(query_scene(64).image, big, atol=1e-6, rtol=0)


def test_query_scene_sizes():
    with pytest.raises(ValueError, match="sizes \\[56, 64\\], got 48"):
        query_scene(48)
