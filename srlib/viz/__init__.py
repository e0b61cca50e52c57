"""Visual and quantitative tools for looking inside attention: maps, softmax flattening, cost curves.

The most used functions are importable from ``srlib.viz`` directly; the rest live in submodules:

==========================  =================================================================================
``srlib.viz.explorer``      :class:`AttentionExplorer` (the interactive widget), ``prepare_attention`` /
                            ``query_attention`` (the numbers it shows), ``collect_attention_layers`` (the
                            attention modules of a trained network with their input features), ``keys_carrying``
``srlib.viz.attention_maps``  one query's map, non-local mass, softmax flattening (notebook 00)
``srlib.viz.hashing``       LSH hash codes, collision probability, bucket-neighbour recall (notebooks 01, 03)
``srlib.viz.buckets``       bucket maps, bucket sizes and balance, which keys a query can reach (01, 03, 05)
``srlib.viz.sparsity``      soft-thresholding support, keys carrying a mass, ST vs softmax on the same scores (04)
``srlib.viz.overlap``       LCoAN's overlap rate between shallow and deep layers (05)
``srlib.viz.cost``          measured time and tensor memory against the number of positions (00, 06)
``srlib.viz.plots``         shared matplotlib figures
==========================  =================================================================================
"""

from .attention_maps import (
    HSPAN_FIG1_NS,
    attention_statistics,
    features_for_attention,
    nonlocal_mass,
    patch_descriptors,
    plot_attention_maps,
    query_attention_map,
    softmax_flattening,
)
from .explorer import AttentionExplorer, collect_attention_layers, keys_carrying
from .cost import loglog_slope, measure_attention_cost, peak_tensor_bytes
from .plots import plot_flattening_curves, plot_loglog_cost, plot_softmax_examples

__all__ = [
    "AttentionExplorer",
    "collect_attention_layers",
    "keys_carrying",
    "query_attention_map",
    "nonlocal_mass",
    "features_for_attention",
    "patch_descriptors",
    "plot_attention_maps",
    "attention_statistics",
    "softmax_flattening",
    "HSPAN_FIG1_NS",
    "measure_attention_cost",
    "peak_tensor_bytes",
    "loglog_slope",
    "plot_softmax_examples",
    "plot_flattening_curves",
    "plot_loglog_cost",
]
