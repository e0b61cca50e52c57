"""Visual and quantitative tools for looking inside attention: maps, softmax flattening, cost curves."""

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
from .cost import loglog_slope, measure_attention_cost, peak_tensor_bytes
from .plots import plot_flattening_curves, plot_loglog_cost, plot_softmax_examples

__all__ = [
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
