"""srlib.analysis.capture: what submodules receive in one forward pass (first / last / all calls)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from srlib.analysis.capture import module_inputs, record_calls
from srlib.attention.softthreshold import soft_threshold


class _Twice(nn.Module):
    """Calls ``inner`` twice: on x, then on 2x (the second call with a keyword argument)."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = nn.Identity()

    def forward(self, x):
        return self.inner(x) + self.inner(input=2 * x)


def test_module_inputs_returns_what_each_module_received_in_the_order_asked():
    net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    x = torch.randn(5, 3)
    got = module_inputs(net, x, ["2", "0"])
    assert list(got) == ["2", "0"]
    torch.testing.assert_close(got["0"], x)
    torch.testing.assert_close(got["2"], torch.relu(net[0](x)))
    assert not got["2"].requires_grad  # detached, no graph
    assert all(not m._forward_pre_hooks for m in net.modules())  # hooks removed
    with pytest.raises(ValueError, match=r"not submodules of Sequential: \['nope'\]"):
        module_inputs(net, x, ["nope"])
    with pytest.raises(ValueError, match="'2' of Sequential was not called"):
        module_inputs(net, x, ["2"], forward=lambda m, inp: m[0](inp))
    with pytest.raises(ValueError, match="which must be"):
        module_inputs(net, x, ["0"], which="middle")


def test_first_last_and_all_calls_of_a_module_run_several_times():
    shared = nn.Linear(3, 3)
    net = nn.Sequential(shared, nn.Tanh(), shared)  # the same module called twice
    x = torch.randn(2, 3)
    second = torch.tanh(shared(x)).detach()
    first_in = module_inputs(net, x, ["0"], which="first")["0"]
    last_in = module_inputs(net, x, ["0"], which="last")["0"]
    all_in = module_inputs(net, x, ["0"], which="all")["0"]
    torch.testing.assert_close(first_in, x)
    torch.testing.assert_close(last_in, second)
    assert len(all_in) == 2
    torch.testing.assert_close(all_in[0], x)
    torch.testing.assert_close(all_in[1], second)


def test_record_calls_keeps_keywords_order_and_restores_the_mode():
    net = nn.Sequential(nn.Dropout(0.5), nn.Linear(3, 3))
    net.train()
    modes = []
    net[1].register_forward_pre_hook(lambda m, a: modes.append(m.training))
    calls = record_calls(net, torch.ones(1, 3), lambda name, m: isinstance(m, (nn.Linear, nn.Dropout)),
                         eval_mode=True)
    assert [c.name for c in calls] == ["0", "1"] and modes == [False] and net.training
    assert calls[0].module is net[0] and calls[0].kwargs == {}
    kw = record_calls(_Twice(), torch.ones(2), ["inner"])
    assert [len(c.args) for c in kw] == [1, 0] and torch.equal(kw[1].kwargs["input"], 2 * torch.ones(2))


def test_captured_input_reproduces_an_hspa_map():
    """The features captured at an HSPA module give back exactly the map that module kept (HSPAN Eq. 6)."""
    from srlib.models import build_model

    torch.manual_seed(0)
    net = build_model("hspan", scale=2, preset="small").eval()
    x = torch.rand(1, 3, 10, 9)
    names = [n for n, _ in net.attention_modules()]
    feats = module_inputs(net, x, names, which="last")
    assert list(feats) == names and feats[names[0]].shape == (1, 32, 10, 9)
    attn = dict(net.attention_modules())[names[1]]
    attn.keep_map = True
    with torch.no_grad():
        net(x)
    torch.testing.assert_close(soft_threshold(attn.similarity(feats[names[1]]), topk=attn.topk), attn.last_map)
    assert all(not m._forward_pre_hooks for _, m in net.named_modules())
