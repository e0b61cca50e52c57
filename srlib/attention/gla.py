"""Global Learnable Attention (GLA) with super-bit LSH, DLSN paper (Su et al., "Global Learnable Attention for
Single Image Super-Resolution", TPAMI 2023) Eqs. (8)-(18) and Algorithm 1.

GLA is NLSA (:mod:`srlib.attention.nlsa`) with two changes, and this module contains only those two:

1. **Super-bit LSH** (Eq. 12-13, Algorithm 1 lines 5-8) instead of spherical LSH: the random directions of
   each hash round are *orthonormal* (Gram-Schmidt / QR of a Gaussian matrix) and the code is the argmax
   over the projections, with no ``±`` pairs: :func:`superbit_projections`, :func:`superbit_lsh`.
2. **Learnable similarity scoring** (LSS, Eq. 9-11): a small MLP adds a learned term to the dot-product
   score of every (query, key) pair inside a bucket, passed to the shared
   :func:`~srlib.attention.buckets.bucketed_attention` as ``score_bias``.

Sorting, chunking, attending to adjacent chunks, un-sorting and combining rounds are the shared machinery of
:mod:`srlib.attention.buckets`.

Pipeline of :class:`GlobalLearnableAttention` (``x: (B, C, H, W)``, ``L = H*W``, ``C' = C // reduction``,
``c = chunk_size``, ``R = n_hashes``, ``b`` buckets)::

    q = ReLU(conv_match(x))        (B, L, C')   query = key embedding (shared, Eq. 10: phi_q = phi_k)
    v = ReLU(conv_assembly(x))     (B, L, C)    values phi_v (Eq. 8)
    f = ReLU(conv_assembly_fc(x))  (B, L, C)    LSS features phi_l (Eq. 11)
    codes = argmax_j (q_p @ M_r)_j (B, R, L)    super-bit LSH, M_r: (C', b) orthonormal columns (Eq. 12-13)
    sort, chunk, attend to [own, prev, next] chunk with raw_ij = q_i . k_j / |k_j| + s_l(i, j)   (Eq. 9-10, 14)
    y = sum_r w_r(p) ret_r(p)      (B, L, C)                                                   (Eq. 17-18)
    out = res_scale * y + x

Official behaviour (laoyangui/DLSN ``src/model/attention.py``, class ``GLA``) is the default; it departs from
the paper in two places, both selectable here (``docs/official_code.md``, "DLSN / GLA"):

* ``lss_variant="official"``: the MLP ``Linear(C -> c) - ReLU - Linear(c -> c)`` is applied to each **key's**
  ``f_j``, and its ``i``-th output is added to the score of the query in **slot** ``i`` of the chunk:
  ``s_l(i, j) = MLP(f_j)[i]``. It does not look at the query's content at all.
  ``lss_variant="paper"``: Eq. (9) and (11) as written, ``s_l(i, j) = s_l^j(x_i) = MLP(f_i)[j]``: the MLP
  reads the **query's** feature and outputs one score per candidate key. The candidates are the ``3c`` keys
  of the query's chunk and its two neighbours (the paper: "the search space ... is expanded to 3l"), so
  ``W_1 ∈ R^{3c×C}``, ``W_2 ∈ R^{3c×3c}`` (Eq. 11 with ``n = 3c``). ``lss_variant="none"``: no learned term,
  ``s = s_f`` (the paper's Table 1, "GLA with s_f").
* ``round_weights="official"``: ``w_r(p) = softmax_r(logsumexp_j raw_pj)`` = ``sum_j exp(s) / sum_r' sum_k
  exp(s)`` (NLSN Eq. 11). ``round_weights="paper"``: Eq. (18) as written, with raw scores instead of their
  exponentials: ``w_r(p) = sum_j s_pj / sum_r' sum_k s_pk``. Those weights need not be positive or bounded:
  ``s_f >= 0`` here (both embeddings are ReLU'd), but the learned term can be negative, and the ratio
  blows up when the denominator crosses 0 (where it is exactly 0, e.g. a query whose ReLU'd embedding is all
  zero with ``lss_variant="none"``, we fall back to equal weights). It is kept to show what the equation
  says, not as a recommendation.

Other official details (kept): the embedding is ReLU'd and not normalised before hashing; ``b =
min(L//c + (L//c) % 2, 128)``; a fresh set of orthogonal matrices is drawn in every forward call; the value
conv is 3x3 followed by ReLU; keys are L2-normalised with ``eps = 5e-5``, queries are not.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from srlib._checks import check_choice, check_divisible, check_feature_map, check_int, check_ints, check_number
from srlib.attention.buckets import (
    BucketLayout,
    bucketed_attention,
    combine_rounds,
    look_around,
    n_hash_buckets,
)
from srlib.attention.hashing import argmax_hash

__all__ = [
    "GLA",
    "GlobalLearnableAttention",
    "LSS_VARIANTS",
    "ROUND_WEIGHTS",
    "combine_rounds_paper",
    "paper_round_weights",
    "orthonormal_directions",
    "superbit_lsh",
    "superbit_projections",
]

#: Learnable-similarity-score variants (see the module docstring).
LSS_VARIANTS = ("official", "paper", "none")
#: Round-weighting variants (see the module docstring).
ROUND_WEIGHTS = ("official", "paper")


def orthonormal_directions(
    channels: int,
    n_directions: int,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """One super-bit projection matrix ``(C, M)``: orthonormalised Gaussian directions (Algorithm 1, lines 5-6).

    Draws ``H ~ N(0, 1)`` of shape ``(C, M)`` and orthonormalises it by a QR decomposition whose ``R`` is made
    to have a positive diagonal, which is exactly the Gram-Schmidt process of Algorithm 1 line 6 (and makes
    the result uniformly (Haar) distributed). The columns are orthonormal when ``M <= C``; when ``M > C``
    there cannot be ``M`` orthonormal vectors in ``R^C`` and the *rows* are orthonormal instead (``H`` is
    transposed before the QR). This draws the same numbers in the same order as
    ``torch.nn.init.orthogonal_(torch.empty(C, M), generator=generator)``, which the official code calls, so
    the same generator state gives the same matrix.

    Args:
        channels: embedding channels ``C``.
        n_directions: directions ``M`` (= number of buckets ``b``).
        generator: random source; ``None`` uses the global RNG (as the official code does).
    Returns:
        ``(C, M)`` tensor; ``P^T P = I_M`` if ``M <= C`` else ``P P^T = I_C``.
    Raises:
        ValueError: non-positive sizes.
    """
    if channels <= 0 or n_directions <= 0:
        raise ValueError(f"need positive channels and directions, got C={channels}, M={n_directions}")
    h = torch.empty((channels, n_directions), device=device, dtype=dtype).normal_(0, 1, generator=generator)
    return _orthonormalise(h)


def _orthonormalise(h: torch.Tensor) -> torch.Tensor:
    """Gram-Schmidt (QR with a positive diagonal of ``R``) of the columns of ``h: (..., C, M)``, or of its rows
    when ``M > C``; batched over leading dimensions."""
    wide = h.shape[-2] < h.shape[-1]
    if wide:
        h = h.transpose(-1, -2)
    q, r = torch.linalg.qr(h)  # Gram-Schmidt of the columns of h
    q = q * torch.diagonal(r, dim1=-2, dim2=-1).sign().unsqueeze(-2)  # R's diagonal made positive
    return q.transpose(-1, -2).contiguous() if wide else q


def superbit_projections(
    channels: int,
    n_rounds: int,
    n_buckets: int,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Super-bit projections for ``R`` hash rounds, ``(C, R, b)``: one :func:`orthonormal_directions` per round.

    ``projections[:, r, :]`` is the transpose of the paper's ``M ∈ R^{b×c}`` of round ``r`` (Eq. 12). Rounds are
    drawn one after the other from ``generator`` (official: ``n_hashes`` calls of ``orthogonal_`` on a
    ``[C, b]`` matrix, concatenated), so with the same RNG state this equals the official draw.
    """
    if channels <= 0 or n_buckets <= 0 or n_rounds <= 0:
        raise ValueError(f"need positive sizes, got C={channels}, R={n_rounds}, b={n_buckets}")
    # one (C, b) Gaussian draw per round, in round order (same stream as the official loop), then a batched QR
    h = torch.stack(
        [torch.empty((channels, n_buckets), device=device, dtype=dtype).normal_(0, 1, generator=generator)
         for _ in range(n_rounds)]
    )  # (R, C, b)
    return _orthonormalise(h).permute(1, 0, 2)  # (C, R, b)


def superbit_lsh(
    x: torch.Tensor,
    n_buckets: int,
    n_rounds: int,
    *,
    projections: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Super-bit LSH codes, DLSN Eq. (12)-(13): ``h_r(x_p) = argmax_j (M_r x_p)_j``.

    Args:
        x: ``(B, L, C)`` embeddings (not normalised: the argmax is scale invariant).
        n_buckets: ``b``, one bucket per orthonormal direction.
        n_rounds: hash rounds ``R``.
        projections: explicit ``(C, R, b)`` directions; drawn with :func:`superbit_projections` from
            ``generator`` (or the global RNG) when ``None``.
    Returns:
        ``(codes (B, R, L) int64 in [0, b), projections (C, R, b))``.
    Raises:
        ValueError: ``projections`` of the wrong shape.
    """
    C = x.shape[-1]
    if projections is None:
        projections = superbit_projections(C, n_rounds, n_buckets, generator=generator, device=x.device, dtype=x.dtype)
    elif tuple(projections.shape) != (C, n_rounds, n_buckets):
        raise ValueError(
            f"projections must have shape (C, R, b) = {(C, n_rounds, n_buckets)} for super-bit LSH with "
            f"{n_buckets} buckets, got {tuple(projections.shape)}"
        )
    # No negated half: b buckets need b directions (NLSA's spherical LSH uses b/2 directions and [xR, -xR]).
    return argmax_hash(x, projections.to(x.device), signed=False), projections


def paper_round_weights(raw_sum: torch.Tensor) -> torch.Tensor:
    """Round weights of DLSN Eq. (18) as written: ``w_r(p) = S_r(p) / sum_r' S_r'(p)``, ``S_r(p) = sum_j s_pj``.

    ``S_r(p)`` is the sum of the *raw* scores ``s = s_f + s_l`` of query ``p`` over its ``r``-th round bucket
    (the ``3c`` candidate keys). Unlike the official softmax weights these are not guaranteed positive. Where
    the denominator is exactly 0 the equation is undefined (0/0 happens whenever the ReLU'd embedding of ``p``
    is all zero and there is no learned term, since then every ``s_pj = 0``); there we use equal weights
    ``1/R`` (our choice, not the paper's) so that no NaN enters the network.

    Args:
        raw_sum: ``(B, R, L)`` ``S_r(p)``.
    Returns:
        ``(B, R, L)`` weights summing to 1 over ``R``.
    """
    total = raw_sum.sum(dim=1, keepdim=True)
    undefined = total == 0
    weights = raw_sum / torch.where(undefined, torch.ones_like(total), total)
    return torch.where(undefined, torch.full_like(weights, 1.0 / raw_sum.shape[1]), weights)


def combine_rounds_paper(ret: torch.Tensor, raw_sum: torch.Tensor) -> torch.Tensor:
    """Combine hash rounds with DLSN Eq. (17)-(18) as written: ``out_p = sum_r w_r(p) f_r(x_p)`` with the
    raw-score weights of :func:`paper_round_weights`.

    Args:
        ret: ``(B, R, L, D)`` per-round outputs ``f_r(x_p)`` (Eq. 14).
        raw_sum: ``(B, R, L)`` ``S_r(p) = sum_j s_pj``.
    Returns:
        ``(B, L, D)``.
    """
    return (ret * paper_round_weights(raw_sum).unsqueeze(-1)).sum(dim=1)  # Eq. (17)


class GlobalLearnableAttention(nn.Module):
    """GLA block with residual connection (DLSN Eqs. 8-18, Algorithm 1). Alias: :data:`GLA`.

    Args:
        n_hashes: hash rounds ``R`` (paper/README: 3; official constructor default 4).
        channels: feature channels ``C`` (paper: 256).
        k_size: kernel size of ``conv_match``, ``conv_assembly`` and ``conv_assembly_fc`` (3).
        reduction: the hashing/matching embedding has ``C // reduction`` channels (paper: 64 = 256 / 4).
        chunk_size: bucket size ``c`` (paper ``l`` = 128).
        res_scale: ``out = res_scale * y + x`` (inside DLSN the official code passes 1).
        lss_variant: ``"official"`` (MLP on key features, output indexed by query slot), ``"paper"`` (Eq. 9,
            11: MLP on the query feature, output indexed by key), or ``"none"`` (dot product only).
        round_weights: ``"official"`` (softmax of the per-round logsumexp) or ``"paper"`` (Eq. 18 with raw
            scores).
        max_buckets: cap on the number of buckets (128).

    State-dict keys (official ``GLA``): ``conv_match.0.*`` (``C' x C x k x k``), ``conv_assembly.0.*``,
    ``conv_assembly_fc.0.*`` (``C x C x k x k``), ``fc.0.*`` (``Linear(C, c)``), ``fc.2.*`` (``Linear(c, c)``).
    With ``lss_variant="paper"`` the MLP is ``Linear(C, 3c), Linear(3c, 3c)``; with ``"none"`` there is no
    ``conv_assembly_fc`` and no ``fc``. Official checkpoints therefore load only into ``"official"``.

    Shapes: ``x: (B, C, H, W) -> (B, C, H, W)``, any ``H, W >= 1``. Time and memory are
    ``O(R * L * 3c * (C' + C))``, linear in ``L``.

    Small inputs (the rule of all six srlib attentions: every ``H, W >= 1`` runs and keeps its shape): the
    last chunk is filled with copies of the last sorted rows, as the official code does; where the official
    code fails (``L = H*W < chunk_size``: zero buckets) 2 buckets and one chunk are used, filled by repeating
    the sorted sequence cyclically, exactly as in :class:`~srlib.attention.nlsa.NonLocalSparseAttention`.

    Randomness: the super-bit projections are redrawn in every call (official behaviour) from
    ``self.generator`` (a ``torch.Generator``) or the global RNG; set ``self.projections`` (``(C', R, b)``)
    to fix them, or pass ``projections=`` to :meth:`forward`.

    Set ``keep_details = True`` to keep the last call's codes, projections, layout, attention weights, bucket
    scores, learned score term and round weights in ``self.details``.

    Raises:
        ValueError: non-positive sizes, even ``k_size``, ``channels`` not divisible by ``reduction``, unknown
            ``lss_variant`` / ``round_weights``; at call, an input that is not a floating point ``(B, C, H, W)``
            map or holds NaN/Inf (counted in the message), or projections of the wrong shape.
    """

    def __init__(
        self,
        n_hashes: int = 4, channels: int = 64, k_size: int = 3, reduction: int = 4,  # R, C, conv kernel, C / C'
        chunk_size: int = 144, res_scale: float = 1.0,  # bucket size l; out = res_scale * y + x
        lss_variant: str = "official", round_weights: str = "official",  # the two departures from the paper
        max_buckets: int = 128,
    ) -> None:
        super().__init__()
        check_choice("GLA", "lss_variant", lss_variant, LSS_VARIANTS)
        check_choice("GLA", "round_weights", round_weights, ROUND_WEIGHTS)
        check_ints("GLA", n_hashes=n_hashes, channels=channels, reduction=reduction, chunk_size=chunk_size,
                   max_buckets=max_buckets)
        check_int("GLA", "k_size", k_size, odd=True)
        check_divisible("GLA", "channels", channels, "reduction", reduction)
        check_number("GLA", "res_scale", res_scale, low=0)
        self.n_hashes = n_hashes
        self.channels = channels
        self.chunk_size = chunk_size
        self.reduction = reduction
        self.res_scale = res_scale
        self.lss_variant = lss_variant
        self.round_weights = round_weights
        self.max_buckets = max_buckets
        self.key_eps = 5e-5  # official F.normalize eps of the keys

        def conv_relu(out_ch: int) -> nn.Sequential:  # official common.BasicBlock(conv, C, out, k, act=ReLU)
            return nn.Sequential(nn.Conv2d(channels, out_ch, k_size, padding=k_size // 2), nn.ReLU(inplace=True))

        self.conv_match = conv_relu(channels // reduction)  # phi_q = phi_k (Eq. 10), also hashed
        self.conv_assembly = conv_relu(channels)  # phi_v (Eq. 8)
        if lss_variant != "none":
            self.conv_assembly_fc = conv_relu(channels)  # phi_l (Eq. 11)
            n_out = chunk_size if lss_variant == "official" else 3 * chunk_size
            self.fc = nn.Sequential(nn.Linear(channels, n_out), nn.ReLU(inplace=True), nn.Linear(n_out, n_out))
        self.projections: torch.Tensor | None = None
        self.generator: torch.Generator | None = None
        self.keep_details = False
        self.details: dict | None = None

    # -- the two things GLA adds to NLSA -------------------------------------------------------------------

    def hash(
        self, emb: torch.Tensor, projections: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Super-bit codes ``(B, R, L)`` of embeddings ``(B, L, C')``; returns ``(codes, projections, b)``."""
        # Official count; a map smaller than one chunk gets the count of one chunk (2), see the class docstring.
        n_buckets = n_hash_buckets(max(emb.shape[1], self.chunk_size), self.chunk_size, self.max_buckets)
        codes, projections = superbit_lsh(
            emb, n_buckets, self.n_hashes,
            projections=projections if projections is not None else self.projections,
            generator=self.generator,
        )
        return codes, projections, n_buckets

    def learnable_score(self, feats: torch.Tensor, layout: BucketLayout) -> torch.Tensor:
        """The learned term ``s_l(i, j)`` for every query slot ``i`` and candidate key ``j`` (Eq. 9, 11), whole.

        The forward pass builds it whole only where it needs it (``keep_details``, the paper's round weights,
        the paper's LSS variant); otherwise it hands the MLP rows of the keys to
        :func:`~srlib.attention.buckets.bucketed_attention` (``key_bias``), which adds this same term block by
        block.

        Args:
            feats: ``(B, L, C)`` LSS features ``f = ReLU(conv_assembly_fc(x))``.
            layout: the bucket layout of this call.
        Returns:
            ``(B, R, n, c, 3c)``, aligned with the scores of :func:`~srlib.attention.buckets.bucketed_attention`.
        """
        mlp_out = self.fc(layout.to_chunks(feats))  # (B, R, n, c, c_out): the MLP of every row
        if self.lss_variant == "official":
            # MLP of every key row: (B, R, n, c, c_out); neighbours' rows -> (B, R, n, 3c, c_out). The MLP acts
            # row by row, so applying it before look_around equals the official order (after it), 3x cheaper.
            return look_around(mlp_out).transpose(-1, -2)  # [j, i] -> [i, j]: the key j and the query's slot i
        # paper, Eq. (11): s_l(x_i) ∈ R^{3c}, one entry per candidate key in [own, prev, next] order.
        return mlp_out  # (B, R, n, c, 3c)

    # -- forward -------------------------------------------------------------------------------------------

    def _raw_score_sums(self, emb: torch.Tensor, layout: BucketLayout, lss: torch.Tensor | None) -> torch.Tensor:
        """``S_r(p) = sum_j raw_pj`` over the ``3c`` candidates, ``(B, R, L)`` (for Eq. 18).

        By linearity, ``sum_j q_i . k_j = q_i . (sum_j k_j)``: no score matrix needed.
        """
        qc = layout.to_chunks(emb)  # (B, R, n, c, C')
        key_sum = look_around(F.normalize(qc, p=2, dim=-1, eps=self.key_eps)).sum(dim=3, keepdim=True)
        total = (qc * key_sum).sum(-1)  # (B, R, n, c)
        if lss is not None:
            total = total + lss.sum(-1)
        return layout.from_chunks(total)

    def forward(self, x: torch.Tensor, projections: torch.Tensor | None = None) -> torch.Tensor:
        """``x: (B, C, H, W) -> (B, C, H, W)``; ``projections`` ``(C', R, b)`` overrides the random draw."""
        check_feature_map(x, "GLA input x", self.channels)
        B, C, H, W = x.shape
        emb = self.conv_match(x).flatten(2).transpose(1, 2)  # (B, L, C') queries = keys, hashed
        val = self.conv_assembly(x).flatten(2).transpose(1, 2)  # (B, L, C)
        codes, projections, n_buckets = self.hash(emb, projections)  # Eq. (12)-(13)
        layout = BucketLayout.from_codes(codes, self.chunk_size)  # Eq. (15)-(16): sort + chunk

        lss = key_bias = None
        if self.lss_variant != "none":
            feats = self.conv_assembly_fc(x).flatten(2).transpose(1, 2)  # (B, L, C)
            if self.lss_variant == "official" and self.round_weights == "official" and not self.keep_details:
                # the MLP of every key row, one entry per query slot (B, R, n, c, c): bucketed_attention adds
                # it block by block, forward and backward, never as the whole (B, R, n, c, 3c) term
                key_bias = self.fc(layout.to_chunks(feats))
            else:  # the whole term: kept in the details, summed for Eq. (18), or the paper's per-query MLP
                lss = self.learnable_score(feats, layout)  # (B, R, n, c, 3c)
        res = bucketed_attention(  # Eq. (9), (10), (14)
            emb, val, layout, key_eps=self.key_eps,
            score_bias=(lambda _layout: lss) if lss is not None else None,
            return_score=self.keep_details, key_bias=key_bias,
        )
        if self.round_weights == "official":
            y = combine_rounds(res.ret, res.bucket_score)
            weights = torch.softmax(res.bucket_score, dim=1) if self.keep_details else None
        else:  # Eq. (17)-(18) as written
            raw_sum = self._raw_score_sums(emb, layout, lss)
            y = combine_rounds_paper(res.ret, raw_sum)
            weights = paper_round_weights(raw_sum) if self.keep_details else None
        if self.keep_details:
            self.details = {
                "codes": codes, "projections": projections, "n_buckets": n_buckets, "layout": layout,
                "score": res.score, "bucket_score": res.bucket_score, "embedding": emb, "lss": lss,
                "round_weights": weights,
            }
        y = y.transpose(1, 2).reshape(B, C, H, W)
        return self.res_scale * y + x


#: Official class name.
GLA = GlobalLearnableAttention
