"""Non-Local Sparse Attention (NLSA), NLSN paper (Mei, Fan, Zhou, CVPR 2021) Eqs. (6)-(11).

Pipeline (one module):

1. ``x -> conv_match`` (``k_size x k_size`` conv, ``C -> C/reduction``): the matching embedding, used as
   both query and key; ``x -> conv_assembly`` (1x1 conv, ``C -> C``): the values.
2. Spherical LSH (Eq. 7) of the embedding into ``m`` buckets, ``R`` rounds (:mod:`srlib.attention.hashing`).
3. Sort by bucket, chunk, attend within the chunk and its neighbours, un-sort, combine rounds (Eq. 8-11)
   with the shared machinery of :mod:`srlib.attention.buckets`.
4. ``out = res_scale * y + x``.

Official behaviour (``HarukiYqM/Non-Local-Sparse-Attention`` ``src/model/attention.py``) is the default; the
differences from the paper are listed in ``docs/official_code.md`` ("NLSN / NLSA") and in notebook ``01_nlsn``.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from srlib._checks import check_attention_args, check_choice, check_feature_map
from srlib.attention.buckets import BucketLayout, bucketed_attention, combine_rounds, n_hash_buckets
from srlib.attention.hashing import spherical_lsh

__all__ = ["NonLocalSparseAttention"]


class NonLocalSparseAttention(nn.Module):
    """NLSA block with residual connection.

    Args:
        n_hashes: hash rounds ``R`` (paper: 4).
        channels: feature channels ``C``.
        k_size: kernel size of ``conv_match`` (official 3).
        reduction: embedding channels ``C / reduction`` (official 4).
        chunk_size: positions per chunk ``k`` (paper: 144).
        res_scale: ``out = res_scale * y + x`` (official NLSN passes 1; the module default is 1).
        hash_variant: ``"official"`` (argmax over ``[xR, -xR]``) or ``"paper"`` (Eq. 7, argmax over ``xA``).
        max_buckets: cap on the number of buckets (128).

    Shapes: ``x: (B, C, H, W) -> (B, C, H, W)``, any ``H, W >= 1``.

    Small inputs (the rule of all six srlib attentions: every ``H, W >= 1`` runs and keeps its shape): when
    ``L = H*W`` is not a multiple of ``chunk_size`` the last chunk is filled with copies of the last sorted
    rows, as the official code does. The official code fails for ``L < chunk_size`` (zero buckets); here
    such a map uses 2 buckets and one chunk, filled by repeating the sorted sequence cyclically, so every
    position attends to every other one (keys weighted by how often they repeat).

    Randomness: the random rotations are drawn in every forward call (as in the official code) from
    ``self.generator`` (a ``torch.Generator``) or the global RNG; set ``self.projections`` (``(C/r, R, m/2)``)
    to fix them, or pass ``rotations=`` to :meth:`forward`.

    Set ``keep_details = True`` to keep the last call's codes, layout, rotations, bucket scores and chunk
    attention weights in ``self.details`` (for bucket maps and attention maps).

    Raises:
        ValueError: non-positive sizes, even ``k_size``, ``channels`` not divisible by ``reduction``, unknown
            ``hash_variant``; at call, an input that is not a floating point ``(B, C, H, W)`` map or holds
            NaN/Inf (the message counts them; see :func:`srlib.set_input_checks`).
    """

    def __init__(
        self,
        n_hashes: int = 4, channels: int = 64, k_size: int = 3, reduction: int = 4,  # R, C, conv kernel, C / C'
        chunk_size: int = 144, res_scale: float = 1.0,  # chunk size k; out = res_scale * y + x
        hash_variant: str = "official", max_buckets: int = 128,
    ) -> None:
        super().__init__()
        owner = "NonLocalSparseAttention"
        check_attention_args(owner, res_scale, k_size, n_hashes=n_hashes, channels=channels, reduction=reduction,
                             chunk_size=chunk_size, max_buckets=max_buckets)
        check_choice(owner, "hash_variant", hash_variant, ("official", "paper"))
        self.n_hashes = n_hashes
        self.chunk_size = chunk_size
        self.reduction = reduction
        self.res_scale = res_scale
        self.hash_variant = hash_variant
        self.max_buckets = max_buckets
        # Official layout: BasicBlock(conv, C, C/r, k, bn=False, act=None) and BasicBlock(conv, C, C, 1, ...)
        self.conv_match = nn.Sequential(nn.Conv2d(channels, channels // reduction, k_size, padding=k_size // 2))
        self.conv_assembly = nn.Sequential(nn.Conv2d(channels, channels, 1))
        self.projections: torch.Tensor | None = None
        self.generator: torch.Generator | None = None
        self.keep_details = False
        self.details: dict | None = None

    def hash(self, emb: torch.Tensor, rotations: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Bucket codes ``(B, R, L)`` of embeddings ``(B, L, C/r)``; returns ``(codes, rotations, n_buckets)``."""
        # Official count; a map smaller than one chunk gets the count of one chunk (2), see the class docstring.
        n_buckets = n_hash_buckets(max(emb.shape[1], self.chunk_size), self.chunk_size, self.max_buckets)
        codes, rotations = spherical_lsh(
            emb,
            n_buckets,
            self.n_hashes,
            rotations=rotations if rotations is not None else self.projections,
            generator=self.generator,
            variant=self.hash_variant,
        )
        return codes, rotations, n_buckets

    def forward(self, x: torch.Tensor, rotations: torch.Tensor | None = None) -> torch.Tensor:
        check_feature_map(x, "NonLocalSparseAttention input x", self.conv_assembly[0].in_channels)
        B, C, H, W = x.shape
        emb = self.conv_match(x).flatten(2).transpose(1, 2)  # (B, L, C/r): queries and keys
        val = self.conv_assembly(x).flatten(2).transpose(1, 2)  # (B, L, C): values
        codes, rotations, n_buckets = self.hash(emb, rotations)  # Eq. (7)
        layout = BucketLayout.from_codes(codes, self.chunk_size)  # Eq. (8): sort + chunk
        res = bucketed_attention(emb, val, layout, return_score=self.keep_details)  # Eq. (9)-(10)
        y = combine_rounds(res.ret, res.bucket_score)  # Eq. (11)
        if self.keep_details:
            self.details = {
                "codes": codes, "rotations": rotations, "n_buckets": n_buckets, "layout": layout,
                "score": res.score, "bucket_score": res.bucket_score, "embedding": emb,
            }
        y = y.transpose(1, 2).reshape(B, C, H, W)
        return self.res_scale * y + x
