"""Attention maps of non-local attention on real images, and the softmax-flattening statistics.

Tools for looking *inside* dense non-local attention (NLSN paper, Mei et al. CVPR 2021, Eq. 4):

* :func:`query_attention_map` cuts one row out of an ``(L, L)`` weight matrix and lays it back on the image
  grid, so one can see where a query pixel looks;
* :func:`features_for_attention` and :func:`patch_descriptors` are two fixed, deterministic ways to get
  feature maps of a real image for demonstrations (no training needed);
* :func:`softmax_flattening` and :func:`attention_statistics` measure how the softmax of ``n`` random scores
  flattens as ``n`` grows (HSPAN paper, Su et al., Fig. 1).

:func:`srlib.viz.maps.plot_attention_maps` overlays the maps on the image with the query pixels marked.

Conventions: images are ``(3, H, W)`` or ``(1, 3, H, W)`` RGB in ``[0, 1]``; a position ``(y, x)`` of an
``H x W`` grid is the sequence index ``p = y * W + x`` (row-major, as ``Tensor.flatten(2)`` orders it).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from srlib.models.common import DIV2K_MEAN

__all__ = [
    "query_attention_map",
    "nonlocal_mass",
    "features_for_attention",
    "patch_descriptors",
    "attention_statistics",
    "softmax_flattening",
    "HSPAN_FIG1_NS",
]

#: The sequence lengths of HSPAN Fig. 1: nine sequences, ``n = 4², 6², ..., 20²``.
HSPAN_FIG1_NS: tuple[int, ...] = tuple(s * s for s in range(4, 21, 2))


def _as_batched_image(image: Tensor, what: str = "image") -> Tensor:
    """``(3, H, W)`` or ``(1, 3, H, W)`` -> ``(1, 3, H, W)`` float; anything else -> ValueError."""
    if not isinstance(image, Tensor):
        raise ValueError(f"{what} must be a torch.Tensor, got {type(image).__name__}")
    if image.dim() == 3:
        image = image.unsqueeze(0)
    if image.dim() != 4 or image.shape[0] != 1 or image.shape[1] != 3:
        raise ValueError(f"{what} must be (3, H, W) or (1, 3, H, W) RGB, got shape {tuple(image.shape)}")
    if not image.is_floating_point():
        raise ValueError(f"{what} must be floating point in [0, 1], got dtype {image.dtype}")
    return image


def query_attention_map(
    weights: Tensor, query_yx: tuple[int, int], hw: tuple[int, int], *, batch: int = 0
) -> Tensor:
    """The attention weights of one query pixel, laid out on the image grid.

    Row ``i`` of the weight matrix of Eq. (4) (NLSN paper) holds the weights ``a_ij`` that query ``i`` gives
    to every key ``j``; reshaping that row to ``(H, W)`` shows where the query "looks".

    Args:
        weights: ``(L, L)`` or ``(B, L, L)`` weights with ``L = H * W``, row = query, column = key (the
            ``return_map`` output of :func:`srlib.attention.nla.non_local_attention`).
        query_yx: ``(y, x)`` of the query pixel, ``0 <= y < H``, ``0 <= x < W``.
        hw: ``(H, W)`` of the feature map the sequence was flattened from (row-major, ``p = y * W + x``).
        batch: which batch element to read when ``weights`` is ``(B, L, L)``.

    Returns:
        ``(H, W)`` tensor (same dtype/device as ``weights``); for a softmax it sums to 1.

    Raises:
        ValueError: ``weights`` is not 2-D/3-D square in its last two dims, ``L != H * W``, the query lies
            outside the grid, or ``batch`` is out of range.
    """
    if not isinstance(weights, Tensor) or weights.dim() not in (2, 3):
        shape = tuple(weights.shape) if isinstance(weights, Tensor) else type(weights).__name__
        raise ValueError(f"weights must be (L, L) or (B, L, L), got {shape}")
    if weights.shape[-1] != weights.shape[-2]:
        raise ValueError(f"weights must be square in the last two dims, got {tuple(weights.shape)}")
    h, w = (int(v) for v in hw)
    if h <= 0 or w <= 0 or h * w != weights.shape[-1]:
        raise ValueError(f"hw={tuple(hw)} does not match L={weights.shape[-1]} (need H * W == L)")
    y, x = (int(v) for v in query_yx)
    if not (0 <= y < h and 0 <= x < w):
        raise ValueError(f"query {tuple(query_yx)} lies outside the {h}x{w} grid")
    if weights.dim() == 3:
        if not (-weights.shape[0] <= batch < weights.shape[0]):
            raise ValueError(f"batch={batch} out of range for {weights.shape[0]} batch elements")
        weights = weights[batch]
    return weights[y * w + x].reshape(h, w)


def nonlocal_mass(attn_map: Tensor, query_yx: tuple[int, int], radius: float) -> Tensor:
    """Share of an attention map's weight that lies *far* from its query: Euclidean distance ``> radius``.

    A local operator (a convolution, a window attention of that radius) would put all its weight within
    ``radius``; what dense non-local attention gives to farther positions is what it adds.

    Args:
        attn_map: ``(H, W)`` non-negative map (e.g. :func:`query_attention_map`).
        query_yx: ``(y, x)`` of the query.
        radius: distance in pixels (``>= 0``); keys with ``(dy² + dx²)^½ > radius`` count as far.

    Returns:
        0-dim tensor: ``sum(far weights) / sum(all weights)``, in ``[0, 1]``.

    Raises:
        ValueError: ``attn_map`` not 2-D, negative radius, all-zero map, query outside the map.
    """
    if not isinstance(attn_map, Tensor) or attn_map.dim() != 2:
        raise ValueError("attn_map must be an (H, W) tensor")
    if radius < 0:
        raise ValueError(f"radius must be >= 0, got {radius}")
    h, w = attn_map.shape
    y, x = (int(v) for v in query_yx)
    if not (0 <= y < h and 0 <= x < w):
        raise ValueError(f"query {tuple(query_yx)} lies outside the {h}x{w} map")
    total = attn_map.sum()
    if total <= 0:
        raise ValueError("attn_map has no positive weight")
    yy = torch.arange(h, device=attn_map.device).view(h, 1) - y
    xx = torch.arange(w, device=attn_map.device).view(1, w) - x
    far = (yy * yy + xx * xx).to(attn_map.dtype) > radius * radius
    return (attn_map * far).sum() / total


def features_for_attention(
    image: Tensor, channels: int = 32, *, kernel_size: int = 3, seed: int = 0
) -> Tensor:
    """Feature maps of a real image from the head of an *untrained* EDSR, seeded and deterministic.

    EDSR-style networks (all five papers) start with ``sub_mean`` (subtract the DIV2K mean colour) and one
    ``kernel_size x kernel_size`` convolution from 3 to ``channels`` channels. This function applies exactly
    that, with the convolution initialised like PyTorch's default (``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``
    for weight and bias) from a private generator seeded with ``seed``, so the same image always gives the
    same features, whatever the global RNG state. Untrained features carry colour and local structure, but
    no learned notion of similarity: good for checking shapes and equations, not for meaningful maps (use
    :func:`patch_descriptors` for those).

    Args:
        image: ``(3, H, W)`` or ``(1, 3, H, W)`` RGB in ``[0, 1]``.
        channels: output channels ``C`` (the papers use 64 or 128 at full size).
        kernel_size: odd convolution size (zero padding ``kernel_size // 2``, as ``default_conv``).
        seed: seed of the private ``torch.Generator`` for the weights.

    Returns:
        ``(1, C, H, W)`` features, dtype and device of ``image``.

    Raises:
        ValueError: bad image shape/dtype, ``channels < 1``, or an even/non-positive ``kernel_size``.
    """
    x = _as_batched_image(image)
    if channels < 1:
        raise ValueError(f"channels must be >= 1, got {channels}")
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be a positive odd number, got {kernel_size}")
    gen = torch.Generator().manual_seed(seed)
    bound = 1.0 / math.sqrt(3 * kernel_size * kernel_size)
    weight = (torch.rand(channels, 3, kernel_size, kernel_size, generator=gen, dtype=torch.float64) * 2 - 1) * bound
    bias = (torch.rand(channels, generator=gen, dtype=torch.float64) * 2 - 1) * bound
    mean = torch.tensor(DIV2K_MEAN, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return F.conv2d(
        x - mean,  # MeanShift(sign=-1) with rgb_range 1
        weight.to(x.dtype).to(x.device),
        bias.to(x.dtype).to(x.device),
        padding=kernel_size // 2,
    )


def patch_descriptors(image: Tensor, patch_size: int = 5) -> Tensor:
    """Hand-crafted embedding: the unit-norm colour patch around every pixel (a stand-in for learned ``theta``).

    For pixel ``p`` the descriptor is the ``patch_size x patch_size`` RGB patch centred on ``p`` (reflect
    padding at the border), minus the image's mean colour, flattened to ``3 * patch_size²`` numbers and
    scaled to unit L2 norm. With ``theta = phi = descriptor / sqrt(tau)``, the score
    ``theta(x_i)^T phi(x_j) = cos(patch_i, patch_j) / tau`` of Eq. (4) is high exactly for pixels whose
    neighbourhoods look alike -- the classic non-local-means similarity (Buades et al. 2005) written as an
    embedded Gaussian. Trained networks learn such embeddings; this one needs no training.

    Centring by the *global* mean colour (not each patch's own mean) keeps colour information: a flat sky
    patch still has a direction (its colour minus the mean), so flat regions match other flat regions of the
    same colour instead of becoming undefined.

    Args:
        image: ``(3, H, W)`` or ``(1, 3, H, W)`` RGB in ``[0, 1]``.
        patch_size: odd side of the patch, smaller than ``min(H, W)`` (reflect padding needs it).

    Returns:
        ``(1, 3 * patch_size², H, W)``, unit norm along dim 1 (a constant image gives zero vectors).

    Raises:
        ValueError: bad image shape/dtype, even or non-positive ``patch_size``, or a patch too large for the
            image.
    """
    x = _as_batched_image(image)
    if patch_size < 1 or patch_size % 2 == 0:
        raise ValueError(f"patch_size must be a positive odd number, got {patch_size}")
    r = patch_size // 2
    h, w = x.shape[-2:]
    if r >= min(h, w):
        raise ValueError(f"patch_size {patch_size} too large for a {h}x{w} image")
    centred = x - x.mean(dim=(2, 3), keepdim=True)
    padded = F.pad(centred, (r, r, r, r), mode="reflect") if r else centred
    cols = F.unfold(padded, patch_size)  # (1, 3 * p², H * W)
    desc = F.normalize(cols, dim=1, eps=1e-12)
    return desc.reshape(1, 3 * patch_size * patch_size, h, w)


def attention_statistics(weights: Tensor, top_k: int = 4) -> dict[str, Tensor]:
    """Concentration statistics of attention distributions (rows of a weight matrix).

    Args:
        weights: ``(..., n)`` non-negative rows summing to 1 (e.g. softmax outputs).
        top_k: how many of the largest weights to add up for ``"top_mass"`` (``1 <= top_k <= n``).

    Returns:
        dict of ``(...)`` tensors: ``"max_weight"`` (largest weight), ``"entropy"`` (``-sum p log p`` in nats,
        with ``0 log 0 = 0``), ``"normalized_entropy"`` (entropy / ``log n``: 1 for the uniform distribution,
        0 for a one-hot one; defined as 0 when ``n = 1``), ``"top_mass"`` (sum of the ``top_k`` largest weights)
        and ``"effective_support"`` (``exp(entropy)``: how many entries a uniform distribution with the same
        entropy would spread over).

    Raises:
        ValueError: empty last dim, ``top_k`` outside ``[1, n]``, negative weights.
    """
    if not isinstance(weights, Tensor) or weights.dim() < 1 or weights.shape[-1] < 1:
        raise ValueError("weights must be a tensor (..., n) with n >= 1")
    n = weights.shape[-1]
    if not 1 <= top_k <= n:
        raise ValueError(f"top_k must be in [1, {n}], got {top_k}")
    if (weights < 0).any():
        raise ValueError("weights must be non-negative")
    entropy = -torch.special.xlogy(weights, weights).sum(-1)  # xlogy(0, 0) = 0: one temporary, no NaN
    norm = entropy / math.log(n) if n > 1 else torch.zeros_like(entropy)
    return {
        "max_weight": weights.amax(-1),
        "entropy": entropy,
        "normalized_entropy": norm,
        "top_mass": weights.topk(top_k, dim=-1).values.sum(-1),
        "effective_support": entropy.exp(),
    }


def softmax_flattening(
    ns: Sequence[int] = HSPAN_FIG1_NS,
    trials: int = 1000,
    generator: torch.Generator | None = None,
    *,
    top_k: int = 4,
) -> dict:
    """Softmax of standard-normal scores for growing sequence lengths ``n`` (HSPAN paper, Fig. 1).

    HSPAN (Su et al.) Fig. 1 draws nine score vectors from ``N(0, 1)`` with ``n = 4², 6², ..., 20²`` and shows
    that the softmax spreads out as ``n`` grows: "even the most important non-local information can only be
    assigned to a very small value". This function repeats the draw ``trials`` times per ``n`` and averages
    :func:`attention_statistics` over the trials.

    What to expect (large ``n``): ``sum_j exp(s_j) ~ n E[e^s] = n e^{1/2}``, and the largest score ``m_n``
    grows only like ``sqrt(2 ln n)``, so the largest weight is about ``exp(m_n - 1/2) / n``, which decreases
    towards 0; the entropy ``ln(sum_j e^{s_j}) - sum_j p_j s_j`` approaches ``ln n + 1/2 - E[s e^s] / E[e^s]
    = ln n - 1/2``, only half a nat below the uniform distribution's ``ln n``.

    Sampling order (so that results can be reproduced by hand): for each ``n`` in ``ns``, in order,
    ``scores = torch.randn(trials, n, generator=generator, dtype=torch.float64)``.

    Args:
        ns: sequence lengths, each ``>= top_k``.
        trials: independent score vectors per ``n`` (``>= 1``).
        generator: source of randomness (``None``: a fresh generator seeded with 0, so the default is
            deterministic too).
        top_k: number of largest weights summed in ``"top_mass"``.

    Returns:
        dict with ``"n"`` ``(K,)`` int64 and, for each statistic of :func:`attention_statistics`, its mean
        over trials ``(K,)`` float64 (same keys) plus ``"<key>_std"``; ``"example"``: a list of ``K``
        ``(n,)`` weight vectors (the first trial, in draw order, as the paper plots them);
        ``"top_k"``: ``top_k``.

    Raises:
        ValueError: empty ``ns``, an ``n < top_k`` or ``< 1``, ``trials < 1``.
    """
    ns = [int(n) for n in ns]
    if not ns:
        raise ValueError("ns must contain at least one sequence length")
    if trials < 1:
        raise ValueError(f"trials must be >= 1, got {trials}")
    for n in ns:
        if n < max(1, top_k):
            raise ValueError(f"sequence length n={n} must be >= top_k={top_k} and >= 1")
    if generator is None:
        generator = torch.Generator().manual_seed(0)
    out: dict = {"n": torch.tensor(ns, dtype=torch.int64), "example": [], "top_k": top_k}
    per_n: dict[str, list[Tensor]] = {}
    for n in ns:
        scores = torch.randn(trials, n, generator=generator, dtype=torch.float64)
        p = torch.softmax(scores, dim=-1)
        out["example"].append(p[0].clone())
        for key, value in attention_statistics(p, top_k).items():
            per_n.setdefault(key, []).append(value)
    for key, values in per_n.items():
        stacked = torch.stack(values)  # (K, trials)
        out[key] = stacked.mean(1)
        out[key + "_std"] = stacked.std(1) if trials > 1 else torch.zeros(len(ns), dtype=torch.float64)
    return out
