"""Exercises of notebook 06 (the six mechanisms side by side). Checkers compute the expected value with the
analytic FLOP counts of :mod:`srlib.analysis.flops`."""

from __future__ import annotations

from . import exercise


def _crossover_side(max_side: int = 400) -> int:
    from srlib.analysis.flops import attention_flops_table

    for side in range(12, max_side + 1):  # H*W must hold at least one chunk of 144
        t = attention_flops_table(side, side, 64, nlsa_rounds=(4,), enla_features=(16,))
        if t["NLSA-r4"].total < t["NLA"].total:
            return side
    raise RuntimeError(f"no crossover up to side {max_side}")


exercise("06.1", "Temperature: which maps change", "★ warm-up", points=1,
         solution="The softmax maps (NLA, NLSA, GLA, LCoA) and HSPA sharpen as the temperature drops: NLA's 90%-mass "
                  "count falls and HSPA keeps fewer keys as the scores spread further apart; at 0.1 both widen.")(None)
exercise("06.2", "ENLA with a larger amplification", "★★ practice", points=2,
         solution="A larger amplification sharpens exp(k cos) towards NLA's map, but the random-feature estimate gets "
                  "noisier, so the map stays blotchy; more features (n_features) reduce that variance at a linear cost.")(None)


@exercise("06.3", "Where NLSA-r4 becomes cheaper than NLA", "★★ practice", points=2,
          solution="NLSA-r4 costs about 4 rounds x 3 chunks of 144 keys per query while NLA pays L keys, so the "
                   "crossover is near L = 4 x 3 x 144 plus the hash cost: side 43 in the analytic count; measured times "
                   "cross elsewhere, because sorting, gathering and memory traffic are not FLOPs.",
          hint="loop over the side s of an s x s x 64 map with attention_flops_table(s, s, 64) and compare the "
               "'NLSA-r4' and 'NLA' totals")
def _crossover(answer):
    want = _crossover_side()
    return int(answer) == want, "the smallest side s (whole number) with FLOPs(NLSA-r4) < FLOPs(NLA), d = 16"


exercise("06.4", "How much could a sparse HSPA aggregation save", "★★ practice", points=2,
         solution="A sparse aggregation saves the weighted sum over the zero weights (the L x L x dv term), but every "
                  "query must still score all L keys to find its threshold, so the L x L x d scores remain.")(None)


@exercise("06.5", "LCoA with many sharing layers: FLOPs per layer in the limit", "★★★ challenge", points=3,
          solution="(LSP + (n - 1) CoA) / n tends to the CoA row, about 0.557 GFLOPs per layer at 100 x 100 x 64: the "
                   "scores are saved, the aggregation is not, so FLOPs fall by about a quarter, less than the time "
                   "saving Table I reports.",
          hint="with n layers, one LSP and n - 1 CoA modules: (LSP + (n - 1) CoA) / n tends to the CoA row")
def _lcoa_limit(answer):
    from srlib.analysis.flops import attention_flops_table

    want = attention_flops_table(100, 100, 64)["LCoA-CoA"].total / 1e9
    got = float(answer)
    return abs(got - want) <= 0.01 * want, "GFLOPs per layer at 100 x 100 x 64 as the number of layers grows"


exercise("06.6", "Fused attention: memory, and when PyTorch falls back", "★★★ challenge", points=3,
         solution="The fused NLA row stays near linear in memory while the explicit map is quadratic; with 3-D inputs "
                  "and unequal widths the flash kernel refuses and PyTorch falls back to math, which "
                  "fused_softmax_attention avoids by adding a heads dimension and padding.")(None)
