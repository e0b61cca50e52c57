"""Interactive attention explorer: where does one query pixel look, under each of the six mechanisms?

Three modules, one per layer of the work (everything is importable from ``srlib.viz.explorer``):

* :mod:`.state` (the maths, no widgets, unit-tested): :func:`prepare_attention` runs the shared part of one srlib
  attention module on a feature map once per *knob setting* and keeps only what every query needs, all of it
  ``O(L)`` (embeddings, hash codes and bucket layout, random features); :meth:`AttentionState.query` then
  computes the weights of one query over all ``L = H*W`` positions in ``O(L D)`` (dense, ENLA) or
  ``O(R * 3c * D)`` (bucketed) work, never an ``L x L`` map. :func:`query_attention` does both in one call;
  :class:`AttentionCache` keeps recent states so that moving the query never recomputes the expensive part.
* :mod:`.picture`: the PNG, drawn with numpy and PIL, redrawn in place;
* :mod:`.widget`: :class:`AttentionExplorer` (ipywidgets): pick
  the query with x/y sliders (or a click on the picture, when ``ipyevents`` is installed), the mechanism, the
  layer and the knob that matters. ``benchmarks/explorer.py`` measures how fast it answers.

The mechanisms, their knobs and demo modules come from :mod:`srlib.attention.registry`: a mechanism
registered there appears in :data:`KNOBS`, :func:`mechanisms`, :func:`prepare_attention` and the widget.
The rows themselves are computed by :mod:`srlib.analysis.rows`, as in the analysis code.

What the map of one query ``p`` is, per mechanism (``y_p = sum_j map_j v_j`` for the mechanism's values ``v``):

========  =================================================================================================
``NLA``   softmax row ``softmax_j(theta(x_p) . phi(x_j))``, NLSN Eq. (4)
``NLSA``  sum over hash rounds of ``w_r(p)`` times the chunk-restricted softmax of round ``r`` scattered back
          to positions (NLSN Eqs. 9-11; :func:`srlib.analysis.rows.bucketed_row`, the row of
          :func:`~srlib.analysis.rows.attention_on_positions` computed from the query's own keys)
``ENLA``  ``phi(q_p) . phi(k_j) / sum_j' phi(q_p) . phi(k_j')`` with positive random features (ENLCN Eqs. 4-6);
          the exact ``softmax_j(q_p . k_j)`` it approximates is returned too (``exact=True`` shows it)
``GLA``   as NLSA with super-bit LSH and GLA's own round weights (DLSN Eqs. 14, 17-18)
``HSPA``  soft-thresholding (sparsemax) row of ``phi_q(x_p) . phi_k(x_j)`` (HSPAN Eqs. 7-12), optional top-k
``LCoA``  as NLSA with nearest-k-means-centroid codes, one round (LCoAN Eqs. 6-11)
========  =================================================================================================

Modules. Pass trained srlib modules (``module=`` / ``layer_modules=``, e.g. from :func:`collect_attention_layers`
on a network), or let :func:`demo_module` build one: a seeded srlib module whose query/key embedding is the
identity scaled by the temperature, so that the score of two *unit* feature vectors is ``cos / temperature``
(for ENLA the amplification ``k`` plays that role: ``k cos``). With :func:`~srlib.analysis.maps.patch_descriptors`
as features this is the non-local-means similarity of notebook ``00b``: the maps are meaningful without training.

Images: :class:`AttentionExplorer` takes a tensor, an image file (yours, or a benchmark image), or the name
of a bundled sample photograph; :func:`demo_scene` is the scene of notebook ``00b``
(:func:`srlib.data.scenes.demo_scene`, re-exported here).

Conventions: features ``(1, C, H, W)``; position ``(y, x)`` is index ``p = y * W + x``; maps ``(H, W)``.
"""

from __future__ import annotations

from srlib.data.scenes import demo_scene

from .state import __all__ as _STATE_NAMES
from .state import (  # noqa: F401 (re-exported, listed in _STATE_NAMES)
    KNOBS,
    MECHANISMS,
    TEMPERATURES,
    AttentionCache,
    AttentionState,
    Knob,
    collect_attention_layers,
    default_knobs,
    demo_module,
    keys_carrying,
    mechanisms,
    module_knobs,
    prepare_attention,
    query_attention,
    settable_knobs,
)
from .widget import AttentionExplorer

__all__ = [*_STATE_NAMES, "AttentionExplorer", "demo_scene"]
