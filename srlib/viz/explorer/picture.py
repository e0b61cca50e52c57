"""The explorer's picture: two panels drawn with numpy into one RGB array and encoded as PNG with PIL.

:class:`_Picture` draws one :meth:`~srlib.viz.explorer.state.AttentionState.query` result (no matplotlib figure,
no pyplot state; matplotlib only lends its ``inferno`` colour table); :func:`_load_image` turns what the
explorer is given (a tensor, an image file, a sample name) into a ``(3, H, W)`` RGB tensor in ``[0, 1]``.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import Tensor

from srlib.attention import registry

__all__: list[str] = []


def _load_image(image: Any) -> Tensor:
    """Tensor ``(3, H, W)`` / ``(1, 3, H, W)`` in [0, 1], an image file path, or a sample name."""
    if isinstance(image, Tensor):
        x = image.detach()
        if x.dim() == 4 and x.shape[0] == 1:
            x = x[0]
        if x.dim() != 3 or x.shape[0] != 3 or not x.is_floating_point():
            raise ValueError(f"image must be a (3, H, W) float RGB tensor in [0, 1], got {tuple(image.shape)}")
        from srlib._checks import check_image_tensor

        # NaN / Inf, a 0-255 picture or a shifted one would draw as plausible nonsense (issue 22)
        check_image_tensor(x, "AttentionExplorer image", dims=(3,), bulk=True)
        return x.float().cpu()
    if isinstance(image, (str, os.PathLike)):
        from srlib.data import load_image
        from srlib.data.samples import SAMPLE_IMAGES, load_sample

        path = Path(image)
        if path.is_file():
            return load_image(path, allow_gray=True)
        if str(image) in SAMPLE_IMAGES:
            return load_sample(str(image))
        raise FileNotFoundError(f"no image file {str(image)!r} (and not a sample name: {sorted(SAMPLE_IMAGES)})")
    raise ValueError(f"image must be a tensor, a path or a sample name, got {type(image).__name__}")


class _Picture:
    """The explorer's picture: two panels drawn straight into one RGB array and encoded as PNG (numpy + PIL).

    Left panel: the image, the query (red cross) and, for bucketed mechanisms, the positions sharing its
    bucket / cluster tinted cyan (alpha 0.45). Right panel: the attention map of the query over the grey image,
    as ``(weight / max weight)^0.5`` in matplotlib's ``inferno`` colours (alpha 0.75), the fewest keys carrying
    90% of the weight outlined in white, the query as a cyan cross.

    The image is shown on the feature grid (area-averaged to ``(h, w)``) and every grid cell is drawn as an
    ``s x s`` block, ``s`` the integer scale that brings the longer side closest to ``panel_px`` pixels, so
    that a picture pixel maps back to exactly one cell (:meth:`position_at`) and the PNG's repeated rows
    compress fast. What does not depend on the query (the image and its grey version on the grid, the canvas
    array, the font) is made once per grid; a query only recolours ``h * w`` cells and rewrites the panels of
    that array in place (the same work for every mechanism).

    Args:
        image: ``(3, H, W)`` RGB in ``[0, 1]`` (stretched onto the feature grid).
        panel_px: target side of a panel in pixels (``>= 8``).
    Raises:
        ValueError: ``panel_px < 8``.
    """

    TITLE = 18  # pixels above the panels for their titles
    MARGIN = 4
    GAP = 8
    BUCKET_TINT = (0.0, 255.0, 255.0)

    def __init__(self, image: Tensor, panel_px: int) -> None:
        if panel_px < 8:
            raise ValueError(f"panel_px must be >= 8, got {panel_px}")
        self.image = image
        self.panel_px = int(panel_px)
        self._grids: dict[tuple[int, int], dict[str, Any]] = {}
        self.grid: dict[str, Any] | None = None  # geometry of the last picture

    def _geometry(self, hw: tuple[int, int]) -> dict[str, Any]:
        import numpy as np
        from matplotlib import colormaps
        from PIL import Image, ImageFont

        if hw in self._grids:
            return self._grids[hw]
        h, w = hw
        s = max(1, round(self.panel_px / max(h, w)))
        ph, pw = h * s, w * s
        x0, x1, y0 = self.MARGIN, self.MARGIN + pw + self.GAP, self.TITLE
        rgb8 = (self.image.clamp(0, 1).permute(1, 2, 0).numpy() * 255.0 + 0.5).astype(np.uint8)
        rgb = np.asarray(Image.fromarray(rgb8).resize((w, h), Image.Resampling.BOX), dtype=np.float32)
        grey = rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)  # BT.601 luma, (h, w)
        try:
            font = ImageFont.load_default(size=11)
        except (TypeError, OSError):  # Pillow without FreeType: the bitmap font
            font = ImageFont.load_default()
        g = {
            "hw": hw, "scale": s, "size": (ph, pw), "origins": ((x0, y0), (x1, y0)), "font": font,
            "canvas": np.full((y0 + ph + self.MARGIN, x1 + pw + self.MARGIN, 3), 255, dtype=np.uint8),
            "rgb": rgb, "rgb8": rgb.round().astype(np.uint8), "grey_part": (0.25 * grey)[..., None],
            "lut": (colormaps["inferno"](np.linspace(0.0, 1.0, 256))[:, :3] * (0.75 * 255.0)).astype(np.float32),
        }
        self._grids[hw] = g
        return g

    def position_at(self, px: float, py: float) -> tuple[int, int] | None:
        """The grid cell ``(y, x)`` under picture pixel ``(px, py)`` (from the top left), either panel, or ``None``."""
        if self.grid is None:
            return None
        g = self.grid
        s, (ph, pw) = g["scale"], g["size"]
        for x0, y0 in g["origins"]:
            if x0 <= px < x0 + pw and y0 <= py < y0 + ph:
                return int((py - y0) // s), int((px - x0) // s)
        return None

    def pixel_of(self, query_yx: tuple[int, int], panel: int = 1) -> tuple[float, float]:
        """Picture pixel ``(px, py)`` of the centre of grid cell ``query_yx`` in ``panel`` (0 left, 1 right).

        Raises:
            ValueError: nothing drawn yet.
        """
        if self.grid is None:
            raise ValueError("nothing drawn yet")
        x0, y0 = self.grid["origins"][panel]
        s = self.grid["scale"]
        return x0 + (query_yx[1] + 0.5) * s, y0 + (query_yx[0] + 0.5) * s

    def render(self, r: Mapping[str, Any]) -> bytes:
        """PNG bytes of the two panels for one :meth:`AttentionState.query` result ``r``."""
        import numpy as np
        from PIL import Image, ImageDraw

        amap = r["map"].double()
        h, w = amap.shape
        g = self._geometry((h, w))
        self.grid = g
        s, (ph, pw), canvas = g["scale"], g["size"], g["canvas"]
        (x0, y0), (x1, _) = g["origins"]

        def up(a):  # (h, w, ...) -> (ph, pw, ...): every cell an s x s block
            return a.repeat(s, axis=0).repeat(s, axis=1) if s > 1 else a

        if r["bucket"] is None:
            left = g["rgb8"]
        else:  # the query's bucket / cluster tinted
            a = r["bucket"].numpy()[..., None] * np.float32(0.45)
            left = (g["rgb"] * (1 - a) + np.array(self.BUCKET_TINT, dtype=np.float32) * a).astype(np.uint8)
        canvas[y0 : y0 + ph, x0 : x0 + pw] = up(left)
        flat = amap.reshape(-1)
        shown = (flat / flat.max().clamp_min(1e-30)).sqrt().numpy()
        colour = g["lut"][(shown * 255.0 + 0.5).astype(np.intp)].reshape(h, w, 3) + g["grey_part"]
        right = canvas[y0 : y0 + ph, x1 : x1 + pw]
        right[...] = up(colour.astype(np.uint8))
        k90 = int(r["keys_for_90"])
        if 0 < k90 < h * w:  # white outline of the fewest keys that carry 90% of the weight
            top = np.zeros(h * w, dtype=bool)
            top[torch.topk(flat, k90, sorted=False).indices.numpy()] = True
            m = np.pad(up(top.reshape(h, w)), 1)
            inner = m[1:-1, 1:-1] & m[:-2, 1:-1] & m[2:, 1:-1] & m[1:-1, :-2] & m[1:-1, 2:]
            right[m[1:-1, 1:-1] & ~inner] = 255
        canvas[:y0] = 255

        img = Image.fromarray(canvas)  # a copy: titles and crosses never reach the canvas
        draw = ImageDraw.Draw(img)
        if r["bucket"] is not None:
            what = registry.get(r["mechanism"]).group
            title0 = f"query and its {what} ({r['bucket_size']} px)"
        else:
            title0 = "query"
        title1 = f"{r['mechanism']}: 90% of the weight on {k90} keys (outlined)"
        if draw.textlength(title1, font=g["font"]) > pw:
            title1 = f"{r['mechanism']}: 90% on {k90} keys (outlined)"
        for x, title in ((x0, title0), (x1, title1)):  # centred above the panel
            left, top, right_, bottom = draw.textbbox((0, 0), title, font=g["font"])
            at = (x + (pw - (right_ - left)) / 2 - left, (y0 - (bottom - top)) / 2 - top)
            draw.text(at, title, fill=(0, 0, 0), font=g["font"])
        arm = max(4.0, 0.6 * s)
        for panel, rgb in ((0, (255, 0, 0)), (1, (0, 255, 255))):
            px, py = self.pixel_of(r["query_yx"], panel)
            draw.line([(px - arm, py - arm), (px + arm, py + arm)], fill=rgb, width=3)
            draw.line([(px - arm, py + arm), (px + arm, py - arm)], fill=rgb, width=3)
        buf = io.BytesIO()
        img.save(buf, format="PNG", compress_level=1)
        return buf.getvalue()
