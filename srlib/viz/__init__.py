"""Pictures of attention, and the interactive explorer: this package draws, :mod:`srlib.analysis` measures.

The most used functions are importable from ``srlib.viz`` directly; the rest live in submodules:

==========================  =================================================================================
``srlib.viz.explorer``      :class:`AttentionExplorer` (the interactive widget), ``prepare_attention`` /
                            ``query_attention`` (the numbers it shows), ``collect_attention_layers`` (the
                            attention modules of a trained network with their input features), ``keys_carrying``
``srlib.viz.maps``          attention maps on the image, most attended positions, rows of weights (00, 03, 04)
``srlib.viz.buckets``       hash sectors, chunks, bucket maps and sizes, which keys a query reaches (01, 03, 05)
``srlib.viz.plots``         softmax flattening, cost against size, benchmark results, loss curves (00, 06)
==========================  =================================================================================

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
