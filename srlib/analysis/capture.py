"""What the submodules of a network receive: one forward pass with hooks, and explicit first / last / all calls.

The analysis of a trained network often needs the features ``X`` that reached one of its attention modules, to
recompute that module's scores or map from exactly what it saw (HSPAN's raw scores under softmax and
soft-thresholding, LCoAN's overlap of bucket patterns from layer to layer, the explorer's layer-by-layer maps).
Everything in srlib that captures such inputs goes through :func:`record_calls`:

* :func:`record_calls` -- every call of the selected submodules during one forward pass, in call order, with the
  positional and keyword arguments it received (tensors detached);
* :func:`module_inputs` -- the first positional input of named submodules, with an explicit choice of *which*
  call when a module runs more than once (``"first"``, ``"last"`` or ``"all"``).

Hooks are forward *pre*-hooks (they see the input, not the output) and are always removed, also on error. The
forward pass runs under ``torch.no_grad()`` unless asked otherwise.
"""

from __future__ import annotations

from typing import Any, Callable, Literal, NamedTuple, Sequence

import torch
from torch import Tensor, nn

__all__ = ["Call", "module_inputs", "record_calls"]

Which = Literal["first", "last", "all"]


class Call(NamedTuple):
    """One call of a submodule: its name in ``model.named_modules()``, the module and what it received."""

    name: str
    module: nn.Module
    args: tuple[Any, ...]  # positional arguments, tensors detached
    kwargs: dict[str, Any]  # keyword arguments, tensors detached


def _detached(value: Any) -> Any:
    return value.detach() if isinstance(value, Tensor) else value


def record_calls(
    model: nn.Module,
    inputs: Any,
    select: Sequence[str] | Callable[[str, nn.Module], bool],
    *,
    forward: Callable[[nn.Module, Any], object] | None = None,
    eval_mode: bool = False,
    grad: bool = False,
) -> list[Call]:
    """Run ``model`` once and record every call of the selected submodules, in call order.

    Args:
        model: any ``nn.Module`` (an srlib network, a stack of attention modules, ...).
        inputs: what ``model`` is called with (or what ``forward`` receives), e.g. an LR batch ``(B, 3, h, w)``
            in ``[0, rgb_range]``.
        select: submodule names as in ``model.named_modules()``, or a predicate ``select(name, module)``
            (e.g. "is an srlib attention module").
        forward: optional ``forward(model, inputs)``; default ``model(inputs)``.
        eval_mode: run in eval mode (the model's train/eval mode is restored afterwards); default: as it is.
        grad: run with autograd on (default off: ``torch.no_grad()``). The attention modules take their
            blocked inference paths without autograd, so deeper layers can see inputs that differ in the last
            bits; pass ``grad=True`` to capture what a training-mode forward computes.
    Returns:
        ``[Call(name, module, args, kwargs), ...]`` (tensors detached), one per call, in call order.
    Raises:
        ValueError: ``select`` names a module that ``model`` does not have.
    """
    named = dict(model.named_modules())
    if callable(select):
        targets = {n: m for n, m in named.items() if select(n, m)}
    else:
        unknown = [n for n in select if n not in named]
        if unknown:
            raise ValueError(f"not submodules of {type(model).__name__}: {unknown}")
        targets = {n: named[n] for n in select}
    calls: list[Call] = []
    handles = []
    for name, module in targets.items():
        def hook(mod, args, kwargs, _name=name):
            calls.append(Call(_name, mod, tuple(_detached(a) for a in args),
                              {k: _detached(v) for k, v in kwargs.items()}))
        handles.append(module.register_forward_pre_hook(hook, with_kwargs=True))
    was_training = model.training
    try:
        if eval_mode:
            model.eval()
        with torch.set_grad_enabled(grad):
            (forward or (lambda m, x: m(x)))(model, inputs)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return calls


def module_inputs(
    model: nn.Module,
    inputs: Any,
    names: Sequence[str],
    *,
    which: Which = "first",
    forward: Callable[[nn.Module, Any], object] | None = None,
) -> dict[str, Tensor] | dict[str, list[Tensor]]:
    """Run ``model`` once and return the first positional input that each named submodule received.

    Used to get the features ``X_m`` entering each attention module of a network (e.g. the names of
    ``net.attention_modules()``), to recompute its scores or compare maps layer by layer. The model's
    train/eval mode is left as it is.

    Args:
        model: the network; inputs: what it is called with (or what ``forward`` receives).
        names: submodule names as in ``model.named_modules()``.
        which: for a module called more than once, its ``"first"`` call's input, its ``"last"`` call's, or
            ``"all"`` of them (a list, in call order).
        forward: optional ``forward(model, inputs)``; default ``model(inputs)``.
    Returns:
        ``{name: tensor}`` (or ``{name: [tensor, ...]}`` with ``which="all"``), detached, in the order of ``names``.
    Raises:
        ValueError: an unknown name, a bad ``which``, or a named module that was not called with a positional input.
    """
    if which not in ("first", "last", "all"):
        raise ValueError(f"which must be 'first', 'last' or 'all', got {which!r}")
    seen: dict[str, list[Tensor]] = {n: [] for n in names}
    for call in record_calls(model, inputs, names, forward=forward):
        if call.args:
            seen[call.name].append(call.args[0])
    not_called = [n for n, got in seen.items() if not got]
    if not_called:
        raise ValueError(f"submodule {not_called[0]!r} of {type(model).__name__} was not called with an input "
                         "during the forward pass")
    if which == "all":
        return {n: seen[n] for n in names}
    return {n: seen[n][0 if which == "first" else -1] for n in names}
