"""One list of mechanisms (issue 25): a mechanism registered in one place reaches the explorer, the FLOP table
and the benchmark case list, and leaves them again when it is unregistered."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from srlib.analysis.bench import BenchCase, bench_cases
from srlib.analysis.flops import FlopCount, attention_flops_table, nla_flops
from srlib.attention import registry
from srlib.attention.nla import NonLocalAttention
from srlib.attention.registry import Knob, Mechanism
from srlib.viz import explorer

SIX = ("NLA", "NLSA", "ENLA", "GLA", "HSPA", "LCoA")


class ToyAttention(NonLocalAttention):
    """Dense attention with a sharper softmax: ``softmax_j(sharpness * q_p . k_j)``."""

    def __init__(self, channel: int, sharpness: float = 2.0) -> None:
        super().__init__(channel=channel, reduction=1)
        self.sharpness = sharpness
        self.normalizer = lambda s: torch.softmax(self.sharpness * s, dim=-1)


def _toy_demo(channels: int, temperature: float, gen: torch.Generator, knobs: dict) -> torch.nn.Module:
    m = ToyAttention(channels, knobs["sharpness"])
    for seq in (m.conv_match1, m.conv_match2):  # theta = phi = x / sqrt(tau): scores cos / tau
        seq[0].weight.data.zero_()
        seq[0].weight.data[:, :, 0, 0] = torch.eye(channels) / math.sqrt(temperature)
        seq[0].bias.data.zero_()
        seq[1].weight.data.fill_(1.0)
    return m


def _toy_rows(h: int, w: int, c: int, settings: dict) -> dict[str, FlopCount]:
    return {"Toy": nla_flops(h, w, c, reduction=settings["reduction"]) + FlopCount({"sharpen": h * w * h * w})}


def _toy_cases() -> list[BenchCase]:
    return [BenchCase("Toy-s2", "Toy", "toy: sharpened dense softmax", lambda c, gen: ToyAttention(c),
                      lambda h, w, c, e: nla_flops(h, w, c, reduction=4, include_embeddings=e), True)]


@pytest.fixture
def toy():
    entry = registry.register(Mechanism(
        "Toy", ToyAttention, "dense",
        (Knob("sharpness", "sharpness s", 2.0, bounds=(1.0, 8.0, 0.5), help="scores times s"),),
        build_demo=_toy_demo, module_knobs=lambda m: {"sharpness": m.sharpness},
        flops=nla_flops, flop_rows=_toy_rows, bench_cases=_toy_cases, paper="a test",
    ))
    try:
        yield entry
    finally:
        registry.unregister("Toy")


def test_the_six_are_registered_in_the_papers_order():
    assert registry.mechanisms()[:6] == SIX == explorer.MECHANISMS
    assert registry.get("HSPA").kind == "dense" and registry.get("ENLA").kind == "features"
    assert [registry.get(m).kind for m in ("NLSA", "GLA", "LCoA")] == ["bucketed"] * 3
    assert registry.resolve(registry.get("NLA").flops) is nla_flops
    with pytest.raises(ValueError, match="unknown mechanism"):
        registry.get("Toy")
    with pytest.raises(ValueError, match="registered already"):
        registry.register(registry.get("NLA"))


def test_a_registered_mechanism_reaches_the_explorer(toy):
    assert explorer.mechanisms()[-1] == "Toy" and "Toy" in explorer.KNOBS
    assert explorer.default_knobs("Toy") == {"sharpness": 2.0}
    g = torch.Generator().manual_seed(3)
    feats = F.normalize(torch.randn(1, 6, 5, 7, generator=g, dtype=torch.float64), dim=1)
    state = explorer.prepare_attention("Toy", feats, temperature=0.5, sharpness=3.0)
    r = state.query((2, 4))
    x = feats.flatten(2)[0].T  # (L, C)
    expected = torch.softmax(3.0 * (x[2 * 7 + 4] @ x.T) / 0.5, dim=-1)
    torch.testing.assert_close(r["map"].reshape(-1), expected, rtol=1e-5, atol=1e-9)  # float32 weights
    assert r["mechanism"] == "Toy" and r["bucket"] is None
    # a given module of the class: its knobs are read, the registry tells it from NLA
    mod = _toy_demo(6, 0.5, g, {"sharpness": 5.0}).double()
    assert registry.mechanism_of(mod) == "Toy" and explorer.module_knobs("Toy", mod) == {"sharpness": 5.0}
    with pytest.raises(ValueError, match="needs a NonLocalAttention"):
        explorer.prepare_attention("NLA", feats, mod)
    ex = explorer.AttentionExplorer(torch.rand(3, 10, 14, generator=g), mechanisms=("Toy", "NLA"), query=(2, 3))
    assert ex.state()["mechanism"] == "Toy" and ex.state()["knobs"] == {"sharpness": 2.0}
    assert abs(ex.state()["map_sum"] - 1) < 1e-5


def test_a_registered_mechanism_reaches_the_flop_table_and_the_benchmark(toy):
    rows = attention_flops_table(20, 20, 8)
    assert list(rows)[-1] == "Toy"
    assert rows["Toy"].terms["sharpen"] == 400 * 400
    assert rows["Toy"].total == 2 * 400 * 400 * (2 + 8) + 400 * 400
    cases = bench_cases()
    assert list(cases)[-1] == "Toy-s2" and cases["Toy-s2"].mechanism == "Toy"
    assert cases["Toy-s2"].flops(10, 8).total == nla_flops(10, 10, 8).total
    y = cases["Toy-s2"].build(8)(torch.rand(1, 8, 6, 6))
    assert y.shape == (1, 8, 6, 6)


def test_unregistering_removes_it_everywhere(toy):
    registry.unregister("Toy")
    try:
        assert "Toy" not in explorer.KNOBS and "Toy" not in attention_flops_table(20, 20, 8)
        assert "Toy-s2" not in bench_cases()
        with pytest.raises(ValueError, match="unknown mechanism"):
            explorer.prepare_attention("Toy", torch.rand(1, 4, 3, 3))
    finally:
        registry.register(toy)  # for the fixture's own unregister
