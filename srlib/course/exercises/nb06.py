"""Exercises of notebook 06 (the six mechanisms side by side). Checkers compute the expected value with the
analytic FLOP counts of :mod:`srlib.analysis.flops`."""

from __future__ import annotations

from ._texts import checks


def _crossover_side(max_side: int = 400) -> int:
    from srlib.analysis.flops import attention_flops_table

    for side in range(12, max_side + 1):  # H*W must hold at least one chunk of 144
        t = attention_flops_table(side, side, 64, nlsa_rounds=(4,), enla_features=(16,))
        if t["NLSA-r4"].total < t["NLA"].total:
            return side
    raise RuntimeError(f"no crossover up to side {max_side}")


@checks("06.3")
def _crossover(answer):
    want = _crossover_side()
    return int(answer) == want, "the smallest side s (whole number) with FLOPs(NLSA-r4) < FLOPs(NLA), d = 16"


@checks("06.5")
def _lcoa_limit(answer):
    from srlib.analysis.flops import attention_flops_table

    want = attention_flops_table(100, 100, 64)["LCoA-CoA"].total / 1e9
    got = float(answer)
    return abs(got - want) <= 0.01 * want, "GFLOPs per layer at 100 x 100 x 64 as the number of layers grows"
