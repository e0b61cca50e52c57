"""Learnable Collaborative Attention (LCoA): k-means sparse pattern + shared attention weights.

LCoAN paper (Zhao et al., "Learnable Collaborative Attention for Single Image Super-Resolution"), Sec. III-B:

* **Learnable sparse pattern (LSP)**, Eqs. (6)-(10). Each position's matching embedding ``x_p`` (``conv_match``)
  is put on the unit sphere (Eq. 8) and assigned to its nearest centroid ``u(x_p)`` of a spherical k-means
  whose centroids ``means (R, K, C)`` are model state (a buffer, not a parameter). Positions are then sorted
  by cluster, cut into fixed windows and attend inside their window and the two neighbouring windows (the
  paper's answer to unequal cluster sizes, Fig. 1b). That last part is exactly NLSA's bucket machinery
  (:mod:`srlib.attention.buckets`): compared with NLSA **only the hash function differs** -- a learned
  nearest-centroid code instead of a random spherical-LSH code (both are argmax hashes,
  :func:`srlib.attention.hashing.argmax_hash`).
* **Collaborative attention (CoA)**, Eqs. (11)-(12). The first LCoA module of the network computes the sparse
  pattern and weights ``A_s = LSP(X_1)``; every later module only transforms its own values and reuses them:
  ``O_m = X_m + beta * A_s W_m(X_m)``.

Centroid bookkeeping (paper vs official code; ``docs/official_code.md``, "LCoAN / LCoA"):

* *Initialisation* (official ``Kmeans.init``): on the first forward call -- in train **and** eval mode --
  while the ``initted`` buffer is False, ``K`` of the ``B*L`` raw (unnormalised) embeddings of the batch are
  picked with ``randperm`` and refined by 10 k-means iterations on the raw vectors (assign by largest dot
  product, new centroid = L2-normalised sum of its vectors, an empty cluster keeps its centroid). Every
  round gets the same centroids.
* *Update*: the paper (Eq. 10) moves each centroid by an exponential moving average with decay
  ``lambda = 0.999`` during training. The official code computes that average but never writes it back
  (``update`` and the backward hook calling it are commented out), so its centroids are **frozen after the
  first batch**. ``ema_update=False`` (default) reproduces the code, so official checkpoints behave as
  trained; ``ema_update=True`` applies the update after every training forward pass.

Shapes: ``x: (B, C, H, W)``, ``L = H*W`` (row-major ``p = h*W + w``), embeddings ``(B, L, C')`` with
``C' = C // reduction``, ``R`` k-means rounds, ``K`` clusters, ``c = window_size``, ``n`` windows.

Official source: ``YigangZhao/LCoAN`` ``src/model/kmeans_attention.py`` (``Kmeans``,
``RecurrentNonLocalKmeansAttention``); the network is :mod:`srlib.models.lcoan`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from srlib._checks import check_divisible, check_feature_map, check_int, check_ints, check_number
from srlib.attention.buckets import BucketLayout, apply_shared_attention, bucketed_attention, combine_rounds
from srlib.attention.hashing import argmax_hash, with_round_offsets

__all__ = [
    "EMA_TARGETS",
    "KMEANS_INIT_ITERS",
    "Kmeans",
    "LCoA",
    "LearnableCollaborativeAttention",
    "RecurrentNonLocalKmeansAttention",
    "SharedAttention",
    "assign_clusters",
    "cluster_sizes",
    "ema_centroids",
    "init_centroids",
    "kmeans_step",
    "sample_init_indices",
]

#: Number of k-means iterations of the data-dependent initialisation (official ``KMEANS_INIT_ITERS``).
KMEANS_INIT_ITERS = 10

#: What the EMA moves the centroids towards: ``"centroid"`` (normalised batch centroid, the official code's
#: dormant ``update``) or ``"sum"`` (Eq. 10 literally: the plain sum of the assigned unit vectors).
EMA_TARGETS = ("centroid", "sum")


# ----------------------------------------------------------------------------------------------------------
# Spherical k-means as functions
# ----------------------------------------------------------------------------------------------------------
def assign_clusters(x: torch.Tensor, means: torch.Tensor) -> torch.Tensor:
    """Nearest-centroid codes ``u(x_p) = argmax_k x_p . means[r, k]`` (LCoAN Eq. 7-8).

    On the unit sphere the nearest centroid is the one with the largest dot product (Eq. 8:
    ``|x - u|^2 = 2 - 2 x.u`` for unit ``x, u``). The official code takes this argmax with the centroids *as
    stored* (not re-normalised), so that is what is done here. This is the k-means counterpart of NLSA's
    spherical-LSH argmax (:func:`srlib.attention.hashing.argmax_hash` with the centroids as projections).

    Args:
        x: ``(B, L, C)`` embeddings (the argmax is invariant to their positive scaling).
        means: ``(R, K, C)`` centroids of ``R`` independent rounds.
    Returns:
        ``(B, R, L)`` int64 codes in ``[0, K)``, without round offsets.
    Raises:
        ValueError: channel mismatch.
    """
    if means.dim() != 3:
        raise ValueError(f"means must be (R, K, C), got shape {tuple(means.shape)}")
    return argmax_hash(x, means.permute(2, 0, 1), signed=False)


def cluster_sizes(codes: torch.Tensor, n_clusters: int) -> torch.Tensor:
    """How many positions of the whole batch fall in each cluster.

    Args:
        codes: ``(B, R, L)`` codes in ``[0, n_clusters)``.
    Returns:
        ``(R, n_clusters)`` int64 counts (summed over the batch).
    """
    B, R, L = codes.shape
    offsets = torch.arange(R, device=codes.device).view(1, R, 1) * n_clusters
    return torch.bincount((codes + offsets).flatten(), minlength=R * n_clusters).view(R, n_clusters)


def _cluster_sums(x: torch.Tensor, codes: torch.Tensor, n_clusters: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum of the vectors ``x (B, L, C)`` assigned to each cluster by ``codes (B, R, L)``, over the batch.

    Returns ``(sums (R, K, C), counts (R, K))``.
    """
    B, R, L = codes.shape
    C = x.shape[-1]
    offsets = torch.arange(R, device=codes.device).view(1, R, 1) * n_clusters
    flat_codes = (codes + offsets).transpose(0, 1).reshape(-1)  # (R*B*L,), round-major
    rows = x.reshape(1, B * L, C).expand(R, -1, -1).reshape(-1, C)  # the same vectors for every round
    sums = x.new_zeros(R * n_clusters, C).index_add_(0, flat_codes, rows)
    counts = torch.bincount(flat_codes, minlength=R * n_clusters)
    return sums.view(R, n_clusters, C), counts.view(R, n_clusters)


def kmeans_step(x: torch.Tensor, means: torch.Tensor, codes: torch.Tensor | None = None) -> torch.Tensor:
    """One spherical k-means (Lloyd) step over a whole batch.

    ``new_k = normalize(sum_{p: u(x_p) = k} x_p)`` over all batch elements and positions; a cluster with no
    vector keeps its old centroid. Official ``kmeans_iter`` (``src/model/kmeans_attention.py``).

    Args:
        x: ``(B, L, C)`` vectors (raw in the initialisation, unit-normalised in the EMA update).
        means: ``(R, K, C)`` current centroids.
        codes: ``(B, R, L)`` assignments; computed with :func:`assign_clusters` when ``None``.
    Returns:
        ``(R, K, C)`` new centroids, in ``x``'s dtype.
    """
    if codes is None:
        codes = assign_clusters(x, means)
    sums, counts = _cluster_sums(x, codes, means.shape[1])
    new = F.normalize(sums, p=2, dim=-1)  # eps 1e-12 as in the code
    return torch.where((counts == 0).unsqueeze(-1), means.to(new.dtype), new)


def sample_init_indices(
    n_samples: int,
    n_clusters: int,
    *,
    indices: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Which of the ``n_samples`` batch vectors seed the ``n_clusters`` centroids.

    Official behaviour: ``randperm(n_samples)[:K]`` when ``n_samples >= K`` (distinct samples), otherwise
    ``randint(0, n_samples, (K,))`` (repeats). With ``generator=None`` and ``indices=None`` the draw comes
    from the global RNG, exactly as the official code draws it.

    Args:
        n_samples: ``B * L``.
        n_clusters: ``K``.
        indices: explicit choice: a permutation of ``range(n_samples)`` (only the first ``K`` entries are
            used, as the official code does with ``randperm``) or any ``>= K`` sample indices.
        generator: ``torch.Generator`` for the random draw (ignored when ``indices`` is given).
        device: device of the result.
    Returns:
        ``(K,)`` int64 indices into the batch-major sample list ``b * L + p``.
    Raises:
        ValueError: ``indices`` not 1-D, shorter than ``K``, or outside ``[0, n_samples)``.
    """
    if indices is not None:
        idx = torch.as_tensor(indices, dtype=torch.long, device=device)
        if idx.dim() != 1 or idx.numel() < n_clusters:
            raise ValueError(
                f"init indices must be a 1-D tensor with at least n_clusters = {n_clusters} entries, "
                f"got shape {tuple(idx.shape)}"
            )
        idx = idx[:n_clusters]
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= n_samples):
            raise ValueError(f"init indices must lie in [0, {n_samples}) (B*L samples), got {idx.tolist()}")
        return idx
    gen_device = generator.device if generator is not None else device
    if n_samples >= n_clusters:
        idx = torch.randperm(n_samples, generator=generator, device=gen_device)[:n_clusters]
    else:
        idx = torch.randint(0, n_samples, (n_clusters,), generator=generator, device=gen_device)
    return idx.to(device) if device is not None else idx


def init_centroids(
    x: torch.Tensor,
    n_clusters: int,
    n_rounds: int = 1,
    *,
    indices: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    n_iters: int = KMEANS_INIT_ITERS,
) -> torch.Tensor:
    """Data-dependent centroid initialisation, as the official ``Kmeans.init``.

    1. Pool the ``B*L`` **raw** vectors of the batch (batch-major, sample ``b*L + p``) and pick ``K`` of them
       (:func:`sample_init_indices`); every round starts from the same samples.
    2. Run ``n_iters`` :func:`kmeans_step` iterations on the raw (unnormalised) vectors.

    The centroids after the first step are unit vectors; a cluster that never receives a vector keeps its
    raw seed sample (not normalised), as in the code.

    Args:
        x: ``(B, L, C)`` raw embeddings (``conv_match`` output).
        n_clusters: ``K``; n_rounds: ``R``.
        indices, generator: see :func:`sample_init_indices`.
        n_iters: k-means iterations (official 10).
    Returns:
        ``(R, K, C)`` centroids in ``x``'s dtype.
    """
    B, L, C = x.shape
    idx = sample_init_indices(B * L, n_clusters, indices=indices, generator=generator, device=x.device)
    means = x.reshape(B * L, C)[idx].unsqueeze(0).expand(n_rounds, -1, -1).contiguous()  # (R, K, C)
    for _ in range(n_iters):
        means = kmeans_step(x, means)
    return means


def ema_centroids(
    means: torch.Tensor,
    x_unit: torch.Tensor,
    codes: torch.Tensor,
    decay: float,
    target: str = "centroid",
) -> torch.Tensor:
    """One exponential-moving-average centroid update (LCoAN Eq. 10).

    * ``target="centroid"``: ``u <- decay * u + (1 - decay) * normalize(sum_{p in u} x_p)``, an empty
      cluster keeps ``u``. This is the update the official code computes (``kmeans_iter`` + ``ema``) and
      would write with ``ema_inplace`` if its ``update`` were not commented out (Routing-Transformer style).
    * ``target="sum"``: Eq. (10) as printed, ``u <- lambda u + (1-lambda)/2 sum_{Q_i in u} Q_i +
      (1-lambda)/2 sum_{K_j in u} K_j``. Queries and keys share one embedding here (``Q = K = x``), so the
      two halves add up to ``(1 - lambda) * sum_{p in u} x_p``; an empty cluster shrinks to ``lambda u``.
      The sum grows with the cluster size, so large clusters get long centroids and, with the
      dot-product assignment, attract still more positions.

    Args:
        means: ``(R, K, C)`` current centroids.
        x_unit: ``(B, L, C)`` unit-normalised embeddings of the batch.
        codes: ``(B, R, L)`` their assignments under ``means``.
        decay: ``lambda`` in ``[0, 1]`` (paper 0.999).
        target: one of :data:`EMA_TARGETS`.
    Returns:
        ``(R, K, C)`` updated centroids, in ``means``' dtype.
    Raises:
        ValueError: unknown ``target``.
    """
    if target not in EMA_TARGETS:
        raise ValueError(f"ema target must be one of {EMA_TARGETS}, got {target!r}")
    x_unit = x_unit.to(means.dtype)
    if target == "centroid":
        batch = kmeans_step(x_unit, means, codes)
    else:
        batch, _ = _cluster_sums(x_unit, codes, means.shape[1])
    return decay * means + (1.0 - decay) * batch


class Kmeans(nn.Module):
    """Spherical k-means state of one LCoA module: centroids as buffers, nearest-centroid codes.

    Buffers (official keys ``kmeans.means``, ``kmeans.initted`` inside an LCoA module):
        means: ``(R, K, C)`` centroids; standard normal at construction (overwritten by the initialisation).
        initted: bool scalar; False until the data-dependent initialisation has run.

    Args:
        n_rounds: independent k-means rounds ``R`` (LCoAN: 1).
        dim: embedding channels ``C``.
        n_clusters: ``K`` (paper 128).
        ema_decay: ``lambda`` of Eq. (10) (0.999).
        ema_update: ``False`` (official code: centroids frozen after the initialisation) or ``True`` (paper:
            EMA update after every forward pass in training mode).
        ema_target: ``"centroid"`` or ``"sum"``, see :func:`ema_centroids`.

    Attributes:
        generator: optional ``torch.Generator`` for the initialisation draw (``None``: global RNG, which is
            how the official code draws it).

    Raises:
        ValueError: non-positive sizes, ``ema_decay`` outside ``[0, 1]`` or unknown ``ema_target``.
    """

    def __init__(
        self,
        n_rounds: int,
        dim: int,
        n_clusters: int,
        ema_decay: float = 0.999,
        ema_update: bool = False,
        ema_target: str = "centroid",
    ) -> None:
        super().__init__()
        if n_rounds < 1 or dim < 1 or n_clusters < 1:
            raise ValueError(f"n_rounds, dim and n_clusters must be positive, got {n_rounds}, {dim}, {n_clusters}")
        if not 0.0 <= ema_decay <= 1.0:
            raise ValueError(f"ema_decay must lie in [0, 1], got {ema_decay}")
        if ema_target not in EMA_TARGETS:
            raise ValueError(f"ema_target must be one of {EMA_TARGETS}, got {ema_target!r}")
        self.n_rounds = n_rounds
        self.n_clusters = n_clusters
        self.ema_decay = ema_decay
        self.ema_update = bool(ema_update)
        self.ema_target = ema_target
        # Drawn from the global RNG like the official module, so seeded construction gives the same values.
        self.register_buffer("means", torch.randn(n_rounds, n_clusters, dim))
        self.register_buffer("initted", torch.tensor(False))
        self.generator: torch.Generator | None = None

    @torch.no_grad()
    def init_from_data(self, x: torch.Tensor, indices: torch.Tensor | None = None, *, force: bool = False) -> bool:
        """Initialise the centroids from a batch if not done yet (official ``Kmeans.init``).

        Args:
            x: ``(B, L, C)`` raw embeddings.
            indices: explicit seed samples / permutation (see :func:`sample_init_indices`); otherwise drawn
                from ``self.generator`` or the global RNG.
            force: re-initialise even if ``initted`` is True.
        Returns:
            True if the centroids were (re)initialised.
        """
        if bool(self.initted) and not force:
            return False
        # In the buffer's precision (float32 under mixed precision; float64 in the reference cases).
        x = x.to(self.means.dtype)
        means = init_centroids(x, self.n_clusters, self.n_rounds, indices=indices, generator=self.generator)
        self.means.copy_(means)
        self.initted.fill_(True)
        return True

    def forward(self, x: torch.Tensor, init_indices: torch.Tensor | None = None) -> torch.Tensor:
        """Cluster codes of embeddings ``x: (B, L, C)`` -> ``(B, R, L)`` int64 (no round offsets).

        Runs the initialisation first if ``initted`` is False (train and eval mode, as the official code).
        Codes come from the unit-normalised embeddings (Eq. 8). In training mode with ``ema_update`` the
        centroids are then moved by Eq. (10); the returned codes use the centroids from before the update.
        """
        if x.dim() != 3 or x.shape[-1] != self.means.shape[-1]:
            raise ValueError(f"k-means input must be (B, L, {self.means.shape[-1]}), got {tuple(x.shape)}")
        self.init_from_data(x.detach(), init_indices)
        with torch.no_grad():
            x_unit = F.normalize(x.detach(), p=2, dim=-1)  # Eq. (8): queries/keys on the unit sphere
            codes = assign_clusters(x_unit, self.means)
            if self.training and self.ema_update:
                self.means.copy_(ema_centroids(self.means, x_unit, codes, self.ema_decay, self.ema_target))
        return codes

    def extra_repr(self) -> str:
        return (
            f"n_rounds={self.n_rounds}, n_clusters={self.n_clusters}, ema_decay={self.ema_decay}, "
            f"ema_update={self.ema_update}, ema_target={self.ema_target!r}"
        )


# ----------------------------------------------------------------------------------------------------------
# The attention module
# ----------------------------------------------------------------------------------------------------------
@dataclass
class SharedAttention:
    """What the computing (LSP) module hands to the collaborative (CoA) modules: ``A_s`` of Eq. (11).

    Attributes:
        score: ``(B, R, n, c, 3c)`` softmax weights of each window's queries over ``[own, prev, next]``
            windows, in sorted, padded order (official ``att_map``). Not detached: gradients of later modules
            flow back into the first module's ``conv_match``, as in the official code.
        bucket_score: ``(B, R, n*c)`` log-normalisers ``logsumexp_j raw_ij`` in sorted, padded order (official
            ``bucket_score``; padded slots may differ from the rows they copy, so this order is kept).
        codes: ``(B, R, L)`` cluster codes without round offsets.
        layout: the :class:`~srlib.attention.buckets.BucketLayout` (sort order, windows).
        n_clusters: ``K`` (for the official code layout with round offsets).
    """

    score: torch.Tensor
    bucket_score: torch.Tensor
    codes: torch.Tensor
    layout: BucketLayout
    n_clusters: int

    @property
    def position_bucket_score(self) -> torch.Tensor:
        """``(B, R, L)`` bucket scores un-sorted to position order (padded slots dropped)."""
        B, R, _ = self.bucket_score.shape
        return self.layout.from_chunks(self.bucket_score.view(B, R, self.layout.n_chunks, self.layout.chunk_size))

    def to_official(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(att_map, bucket_score, kmeans_codes)`` as the official module returns them; codes ``(B, R*L)``
        with ``r * K`` added to round ``r``."""
        return self.score, self.bucket_score, with_round_offsets(self.codes, self.n_clusters)

    @classmethod
    def from_official(
        cls,
        att_map: torch.Tensor,
        bucket_score: torch.Tensor,
        kmeans_codes: torch.Tensor,
        n_clusters: int,
    ) -> "SharedAttention":
        """Wrap the official tuple members (``att_map (B, R, n, c, 3c)``, ``bucket_score (B, R, n*c)``,
        ``kmeans_codes (B, R*L)`` with round offsets).

        Raises:
            ValueError: inconsistent shapes.
        """
        if att_map.dim() != 5:
            raise ValueError(f"att_map must be (B, R, n, c, 3c), got {tuple(att_map.shape)}")
        B, R, n, c, _ = att_map.shape
        if kmeans_codes.dim() != 2 or kmeans_codes.shape[0] != B or kmeans_codes.shape[1] % R:
            raise ValueError(f"kmeans_codes must be (B, R*L) = ({B}, {R}*L), got {tuple(kmeans_codes.shape)}")
        if tuple(bucket_score.shape) != (B, R, n * c):
            raise ValueError(f"bucket_score must be (B, R, n*c) = {(B, R, n * c)}, got {tuple(bucket_score.shape)}")
        codes = kmeans_codes.view(B, R, -1)
        codes = codes - torch.arange(R, device=codes.device).view(1, R, 1) * n_clusters
        layout = BucketLayout.from_codes(codes, c)
        if layout.n_chunks != n:
            raise ValueError(f"att_map has {n} windows but L = {codes.shape[-1]} gives {layout.n_chunks}")
        return cls(score=att_map, bucket_score=bucket_score, codes=codes, layout=layout, n_clusters=n_clusters)


class LearnableCollaborativeAttention(nn.Module):
    """LCoA block: LSP (first module) or CoA (later modules), with residual connection.

    Computing module (``shared=None``), LSP, Eqs. (6)-(11):

    1. ``x_p = conv_match(X)_p`` (``k_size x k_size`` conv, ``C -> C/reduction``, no activation) is both query
       and key; ``v_p = conv_assembly(X)_p`` (1x1 conv, ``C -> C``) are the values.
    2. Codes ``u(x_p)`` = nearest k-means centroid of ``x_p / |x_p|`` (:class:`Kmeans`; Eq. 7-8).
    3. Stable sort by code, windows of ``window_size``, attention to ``[own, prev, next]`` windows with
       ``raw_ij = x_i . x_j / max(|x_j|, 5e-5)``, softmax, rounds combined by ``softmax_r(logsumexp)``
       (the shared :mod:`srlib.attention.buckets` machinery, as NLSA).
    4. ``out = res_scale * y + X``.

    Collaborative module (``shared`` given), Eq. (12): ``O_m = X_m + res_scale * A_s W_m(X_m)`` with
    ``W_m = conv_assembly``: its own values are sorted and windowed with the shared layout and combined with
    the shared weights and round scores. Its ``conv_match`` and ``kmeans`` exist (official checkpoint layout)
    but are not used; the official code still evaluates its ``conv_match`` and discards it, here it is
    skipped (same output).

    Args:
        channels: ``C``; k_size: ``conv_match`` kernel (3); reduction: embedding channels ``C // reduction``
        (official default 4, LCoAN uses 1); n_clusters: ``K`` (128); window_size: ``c`` (paper 384, official
        default 144); res_scale: ``beta`` (the network passes 0.1); ema_decay, ema_update, ema_target: see
        :class:`Kmeans`; n_rounds: k-means rounds ``R`` (LCoAN 1).

    State-dict keys (official): ``kmeans.means (R, K, C/r)``, ``kmeans.initted``, ``conv_match.0.weight``,
    ``conv_match.0.bias``, ``conv_assembly.0.weight``, ``conv_assembly.0.bias``.

    Shapes: ``x: (B, C, H, W) -> (B, C, H, W)``, any ``H, W >= 1``.

    Small inputs (the rule of all six srlib attentions: every ``H, W >= 1`` runs and keeps its shape): the
    last window is filled with copies of the last sorted rows, as the official code does. The official code
    fails when that padding exceeds ``L = H*W`` (a map smaller than about half a window); there the sorted
    sequence is repeated cyclically to fill the window, as in
    :class:`~srlib.attention.nlsa.NonLocalSparseAttention`.

    Set ``keep_details = True`` to keep the last call's codes, layout, weights, bucket scores, embedding and
    centroids in ``self.details``.

    Raises:
        ValueError: non-positive sizes, even ``k_size``, ``channels`` not divisible by ``reduction``,
            ``ema_decay`` outside ``[0, 1]``; at call, an input that is not a floating point
            ``(B, C, H, W)`` map or holds NaN/Inf (counted in the message), or a ``shared`` state that does
            not fit the input (other size, window or rounds).
    """

    def __init__(
        self,
        channels: int = 256, k_size: int = 3, reduction: int = 4,  # C, conv_match kernel, C / C'
        n_clusters: int = 128, window_size: int = 144, res_scale: float = 0.1,  # K, window c, residual scale
        ema_decay: float = 0.999, n_rounds: int = 1, ema_update: bool = False, ema_target: str = "centroid",  # Kmeans
    ) -> None:
        super().__init__()
        owner = "LearnableCollaborativeAttention"
        check_ints(owner, channels=channels, reduction=reduction, n_clusters=n_clusters, window_size=window_size,
                   n_rounds=n_rounds)
        check_int(owner, "k_size", k_size, odd=True)
        check_divisible(owner, "channels", channels, "reduction", reduction)
        check_number(owner, "res_scale", res_scale, low=0)
        self.window_size = window_size
        self.n_rounds = n_rounds
        self.n_clusters = n_clusters
        self.reduction = reduction
        self.res_scale = res_scale
        # Construction order as the official module (kmeans, conv_match, conv_assembly), so that a seeded
        # construction draws the same initial values.
        self.kmeans = Kmeans(n_rounds, channels // reduction, n_clusters, ema_decay, ema_update, ema_target)
        self.conv_match = nn.Sequential(nn.Conv2d(channels, channels // reduction, k_size, padding=k_size // 2))
        self.conv_assembly = nn.Sequential(nn.Conv2d(channels, channels, 1))
        self.keep_details = False
        self.details: dict | None = None

    def _lsp(self, x: torch.Tensor, init_indices: torch.Tensor | None):
        """LSP on ``x: (B, C, H, W)``: returns ``(shared, emb (B, L, C/r), BucketedAttentionResult)``."""
        emb = self.conv_match(x).flatten(2).transpose(1, 2)  # (B, L, C/r): queries and keys
        v = self.conv_assembly(x).flatten(2).transpose(1, 2)  # (B, L, C): values
        codes = self.kmeans(emb, init_indices)  # Eq. (7)-(8): nearest centroid
        layout = BucketLayout.from_codes(codes, self.window_size)  # sort by cluster, fixed windows
        res = bucketed_attention(emb, v, layout, return_score=True)  # Eq. (6): attend inside the pattern
        shared = SharedAttention(
            score=res.score, bucket_score=res.bucket_score_sorted, codes=codes, layout=layout,
            n_clusters=self.n_clusters,
        )
        return shared, emb, res

    def forward(
        self,
        x: torch.Tensor,
        shared: SharedAttention | None = None,
        *,
        init_indices: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, SharedAttention]:
        """Apply LSP (``shared=None``) or CoA (``shared`` from an earlier module).

        Args:
            x: ``(B, C, H, W)`` features.
            shared: weights and pattern of the computing module, or ``None`` to compute them here.
            init_indices: seed samples for a pending k-means initialisation (see :class:`Kmeans`).
        Returns:
            ``(out (B, C, H, W), shared)``: the shared state is the one computed here or the one passed in.
        """
        check_feature_map(x, "LCoA input x", self.conv_assembly[0].in_channels)
        B, C, H, W = x.shape
        emb = None
        if shared is None:  # LSP: A_s = LSP(X_1), Eq. (11)
            shared, emb, res = self._lsp(x, init_indices)
            ret, bucket_score = res.ret, res.bucket_score  # (B, R, L, C), (B, R, L)
        else:  # CoA: reuse A_s and only transform the own values, Eq. (12)
            self._check_shared(shared, B, H * W)
            v = self.conv_assembly(x).flatten(2).transpose(1, 2)  # W_m(X_m): (B, L, C)
            ret = apply_shared_attention(shared.score, v, shared.layout)
            bucket_score = shared.position_bucket_score
        y = combine_rounds(ret, bucket_score)  # (B, L, C)
        if self.keep_details:
            self.details = {
                "codes": shared.codes, "layout": shared.layout, "score": shared.score,
                "bucket_score": bucket_score, "embedding": emb,
                "means": self.kmeans.means.detach().clone(), "collaborative": emb is None,
            }
        y = y.transpose(1, 2).reshape(B, C, H, W)
        return self.res_scale * y + x, shared

    def _check_shared(self, shared: SharedAttention, batch: int, length: int) -> None:
        lay = shared.layout
        if (lay.sort_idx.shape[0], lay.length) != (batch, length):
            raise ValueError(
                f"shared attention was computed for batch {lay.sort_idx.shape[0]} x {lay.length} positions, "
                f"this input has batch {batch} x {length}"
            )
        if lay.chunk_size != self.window_size or lay.n_rounds != self.n_rounds:
            raise ValueError(
                f"shared attention has window {lay.chunk_size} and {lay.n_rounds} rounds, this module expects "
                f"window {self.window_size} and {self.n_rounds} rounds"
            )


#: Short name and the official class name.
LCoA = LearnableCollaborativeAttention
RecurrentNonLocalKmeansAttention = LearnableCollaborativeAttention
