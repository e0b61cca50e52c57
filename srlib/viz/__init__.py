"""Pictures of attention, and the interactive explorer: this package draws, :mod:`srlib.analysis` measures.

The most used functions are importable from ``srlib.viz`` directly; the rest live in submodules:

=============================  ==============================================================================
``srlib.viz.explorer``         package: :class:`AttentionExplorer` (the interactive widget, ``widget``), the
                               numbers it shows (``state``: ``prepare_attention`` / ``query_attention``,
                               ``collect_attention_layers``, ``keys_carrying``; mechanisms and knobs from
                               :mod:`srlib.attention.registry`) and its picture (``picture``)
``srlib.viz.maps``             attention maps on the image, most attended positions, rows of weights (00, 03, 04)
``srlib.viz.buckets``          hash sectors, chunks, bucket maps and sizes, which keys a query reaches (01, 03, 05)
``srlib.viz.plots``            softmax flattening, cost against size, benchmark results, loss curves (00, 06)
``srlib.viz.compare``          side-by-side SR crops, the picture of :func:`srlib.course.quality_table` (06)
``srlib.viz.dlsn_figures``     figures of notebook 03: DLSN Fig. 1 measured, super-bit vs spherical hashing
``srlib.viz.lcoan_figures``    figures of notebook 05: k-means steps, EMA runs, bucket recall, layer overlaps
=============================  ==============================================================================

The numbers behind the pictures (statistics, overlap rates, FLOPs, measured time and memory) are computed in
:mod:`srlib.analysis`, which imports no matplotlib.
"""

from .explorer import AttentionExplorer, collect_attention_layers, keys_carrying
from .maps import plot_attention_maps
from .plots import plot_flattening_curves, plot_loglog_cost, plot_scaling, plot_softmax_examples

__all__ = [
    "AttentionExplorer",
    "collect_attention_layers",
    "keys_carrying",
    "plot_attention_maps",
    "plot_softmax_examples",
    "plot_flattening_curves",
    "plot_loglog_cost",
    "plot_scaling",
]
