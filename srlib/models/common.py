"""EDSR-style building blocks shared by every network in srlib.

All five official repositories (NLSN, ENLCN, DLSN, HSPAN, LCoAN) are forks of EDSR-PyTorch and reuse its
``src/model/common.py``: a padded convolution, a frozen mean-shift layer, a residual block and a sub-pixel
upsampler. The classes here are written from that behaviour, keeping the official ``state_dict`` key layout
so that official checkpoints load unchanged (``tail.0.0.weight``, ``body.3.body.2.bias``, ...; see
the listings ``tests/reference/state_dicts/*.json``).

Images are ``(B, 3, H, W)`` RGB in ``[0, rgb_range]``; feature maps are ``(B, F, H, W)``.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping, Sequence

import torch
from torch import nn

from srlib._checks import check_image_tensor

#: Mean RGB of the DIV2K training set, in ``[0, 1]`` (EDSR-PyTorch ``src/model/common.py``).
DIV2K_MEAN: tuple[float, float, float] = (0.4488, 0.4371, 0.4040)

#: Scales the sub-pixel upsampler can build: powers of two (``log2(s)`` x2 stages) and 3.
UPSAMPLER_SCALES: tuple[int, ...] = (2, 3, 4, 8)

ConvFactory = Callable[..., nn.Module]


def default_conv(in_channels: int, out_channels: int, kernel_size: int, bias: bool = True) -> nn.Conv2d:
    """A stride-1 convolution with ``kernel_size // 2`` zero padding ("same" size for odd kernels).

    Maps ``(B, in_channels, H, W)`` to ``(B, out_channels, H, W)``. This is the ``conv`` factory every
    EDSR-derived network receives (EDSR-PyTorch ``src/model/common.py``, ``default_conv``).
    """
    return nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=bias)


class MeanShift(nn.Conv2d):
    """Frozen 1x1 convolution that subtracts (``sign=-1``) or adds (``sign=+1``) the dataset mean.

    ``y_c = (x_c + sign * rgb_range * mean_c) / std_c``, i.e. weight ``diag(1/std)`` and bias
    ``sign * rgb_range * mean / std``. With the default ``std = (1, 1, 1)`` ``sub_mean`` and ``add_mean``
    are exact inverses. Input and output ``(B, 3, H, W)``.

    The weight and bias are parameters with ``requires_grad=False`` (not buffers), so they appear in the
    ``state_dict`` as ``weight`` / ``bias`` exactly as in the official checkpoints and count in
    ``n_parameters_incl_frozen_meanshift`` but not in the trainable parameters.

    Source: EDSR-PyTorch ``src/model/common.py`` (``MeanShift``), reused by all five repositories.

    Raises:
        ValueError: if ``rgb_mean`` / ``rgb_std`` do not have 3 entries or a std is not positive.
    """

    def __init__(
        self,
        rgb_range: float,
        rgb_mean: Sequence[float] = DIV2K_MEAN,
        rgb_std: Sequence[float] = (1.0, 1.0, 1.0),
        sign: int = -1,
    ) -> None:
        if len(rgb_mean) != 3 or len(rgb_std) != 3:
            raise ValueError(f"rgb_mean and rgb_std need 3 entries, got {tuple(rgb_mean)} and {tuple(rgb_std)}")
        if any(s <= 0 for s in rgb_std):
            raise ValueError(f"rgb_std must be positive, got {tuple(rgb_std)}")
        if sign not in (-1, 1):
            raise ValueError(f"sign must be -1 (subtract) or +1 (add), got {sign}")
        super().__init__(3, 3, kernel_size=1)
        # Default dtype (as the official code): a float64 build gets float64 means, not rounded float32 ones.
        std = torch.tensor(rgb_std, dtype=self.weight.dtype)
        mean = torch.tensor(rgb_mean, dtype=self.weight.dtype)
        with torch.no_grad():
            self.weight.copy_(torch.diag(1.0 / std).view(3, 3, 1, 1))
            self.bias.copy_(sign * rgb_range * mean / std)
        for p in self.parameters():
            p.requires_grad_(False)


class ResBlock(nn.Module):
    """Residual block without batch norm: ``x + res_scale * conv(act(conv(x)))``.

    Input and output ``(B, n_feats, H, W)``. Keys ``body.0.*`` (first conv) and ``body.2.*`` (second conv);
    ``body.1`` is the activation. ``res_scale`` (0.1 in EDSR/NLSN/ENLCN at 256 features) stabilises the
    training of wide networks.

    Source: EDSR-PyTorch ``src/model/common.py`` (``ResBlock`` with ``bn=False``).

    Args:
        conv: factory ``conv(in_ch, out_ch, kernel_size, bias=...)``, usually :func:`default_conv`.
        n_feats: channels ``F``.
        kernel_size: kernel of both convolutions.
        bias: whether the convolutions have a bias.
        act: activation module between the convolutions; ``None`` -> ``nn.ReLU(inplace=True)``.
        res_scale: factor applied to the residual branch.
    """

    def __init__(
        self,
        conv: ConvFactory,
        n_feats: int,
        kernel_size: int,
        bias: bool = True,
        act: nn.Module | None = None,
        res_scale: float = 1.0,
    ) -> None:
        super().__init__()
        self.body = nn.Sequential(
            conv(n_feats, n_feats, kernel_size, bias=bias),
            act if act is not None else nn.ReLU(inplace=True),
            conv(n_feats, n_feats, kernel_size, bias=bias),
        )
        self.res_scale = res_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x: (B, F, H, W)`` -> ``(B, F, H, W)``."""
        return self.body(x).mul(self.res_scale) + x


class Upsampler(nn.Sequential):
    """Sub-pixel (pixel-shuffle) upsampler: ``(B, F, H, W)`` -> ``(B, F, s*H, s*W)``.

    * ``s = 2^k``: ``k`` stages of conv3x3 ``F -> 4F`` + ``PixelShuffle(2)`` (modules ``0, 1`` for x2;
      ``0, 1, 2, 3`` for x4, so the convolutions are keys ``0.*`` and ``2.*``);
    * ``s = 3``: conv3x3 ``F -> 9F`` + ``PixelShuffle(3)`` (modules ``0, 1``).

    In a network's ``tail = Sequential(Upsampler, conv)`` this gives the official keys ``tail.0.0.weight``,
    ``tail.0.2.weight`` (x4) and ``tail.1.weight``.

    Source: EDSR-PyTorch ``src/model/common.py`` (``Upsampler`` without batch norm or activation, the
    configuration all five papers use).

    Raises:
        ValueError: if ``scale`` is not one of :data:`UPSAMPLER_SCALES` (2, 3, 4, 8).
    """

    def __init__(self, conv: ConvFactory, scale: int, n_feats: int, bias: bool = True) -> None:
        if isinstance(scale, bool) or not isinstance(scale, int) or scale not in UPSAMPLER_SCALES:
            raise ValueError(
                f"unsupported upscaling factor scale={scale!r}; supported: {', '.join(map(str, UPSAMPLER_SCALES))}"
            )
        layers: list[nn.Module] = []
        if scale == 3:
            layers += [conv(n_feats, 9 * n_feats, 3, bias=bias), nn.PixelShuffle(3)]
        else:
            for _ in range(scale.bit_length() - 1):  # log2(scale) x2 stages
                layers += [conv(n_feats, 4 * n_feats, 3, bias=bias), nn.PixelShuffle(2)]
        super().__init__(*layers)
        self.scale = scale


class ResBlockStack(nn.Sequential):
    """``n_resblocks`` plain residual blocks ``x + conv(ReLU(conv(x)))``: no batch norm, no residual scaling.

    The paper's LFFB (DLSN Sec. 3.2.1) and LEB (HSPAN Sec. III-B1): the official code of both has a class of that
    name that is *one* such block and ignores its ``res_scale`` argument (scale 1). Keys ``{i}.body.{0,2}.*``;
    ``(B, F, H, W) -> (B, F, H, W)``.

    Args:
        n_feats: channels ``F``; n_resblocks: number of blocks; kernel_size: kernel of every convolution (3).
    """

    def __init__(self, n_feats: int, n_resblocks: int, kernel_size: int = 3) -> None:
        super().__init__(
            *[ResBlock(default_conv, n_feats, kernel_size, act=nn.ReLU(True)) for _ in range(n_resblocks)]
        )


class AttentionGroup(nn.Module):
    """``x + res_scale * body(x)`` with ``body = [residual blocks..., attention, conv3x3]`` flat in one ``Sequential``.

    The unit DLSN (GLAFFM, Eq. 7) and HSPAN (HSPAM, Eq. 5) repeat ``n_resgroups`` times: a
    :class:`ResBlockStack` whose blocks sit directly in ``body`` (keys ``body.{0..n-1}.body.{0,2}.*``), the
    attention module (``body.n.*``; left out when ``attention`` is ``None``) and a feature refinement conv
    (``body.{n+1}.*``), the official key layout. Modules are created in that order (seeded builds draw the
    official initial weights).

    Args:
        n_feats: channels ``F``; n_resblocks: residual blocks before the attention; res_scale: branch scale.
        attention: factory of the attention module, called once after the blocks are built; ``None``: no attention.

    Shapes: ``(B, F, H, W) -> (B, F, H, W)``.
    """

    def __init__(self, n_feats: int, n_resblocks: int, res_scale: float,
                 attention: Callable[[], nn.Module] | None) -> None:
        super().__init__()
        self.n_resblocks = n_resblocks
        modules: list[nn.Module] = list(ResBlockStack(n_feats, n_resblocks))
        if attention is not None:
            modules.append(attention())
        modules.append(default_conv(n_feats, n_feats, 3))  # feature refinement layer
        self.body = nn.Sequential(*modules)
        self.res_scale = res_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x: (B, F, H, W)`` -> ``x + res_scale * body(x)``, same shape."""
        return x + self.body(x) * self.res_scale


def attention_every(attention: Callable[[], nn.Module], n_resblocks: int, attn_every: int, n_feats: int,
                    res_scale: float, conv: ConvFactory = default_conv) -> list[nn.Module]:
    """The body modules of NLSN / ENLCN: ``[attention, (ResBlock x attn_every, attention) ...]``.

    One attention module before the first residual block and one after every ``attn_every`` blocks, as the
    official code builds them (the papers say "one insertion after every 8 residual blocks"; 32 blocks give
    attention at body indices 0, 9, 18, 27, 36). Blocks are ``ResBlock(conv, n_feats, 3, res_scale)`` with a ReLU;
    modules are created in list order (the official order of the global RNG draws). The caller appends the
    final 3x3 conv.

    Args:
        attention: factory of one attention module (called ``1 + n_resblocks // attn_every`` times).
        n_resblocks: residual blocks; attn_every: blocks between two attention modules (>= 1).
        n_feats: channels ``F``; res_scale: residual scale of the blocks; conv: convolution factory.
    """
    body: list[nn.Module] = [attention()]
    for i in range(n_resblocks):
        body.append(ResBlock(conv, n_feats, 3, act=nn.ReLU(True), res_scale=res_scale))
        if (i + 1) % attn_every == 0:
            body.append(attention())
    return body


class SRNetwork(nn.Module):
    """Base of the EDSR-style networks: ``sub_mean -> head -> body (+ long skip) -> tail -> add_mean``.

    A subclass builds ``self.cfg`` (with ``n_colors`` and ``rgb_range``), ``sub_mean``, ``add_mean``, ``head``,
    ``body`` and ``tail`` in its ``__init__`` (in the official ``state_dict`` order; :meth:`build_edsr_layout`
    does it for the networks that share EDSR's), and sets
    :attr:`attention_class`. It overrides :meth:`trunk` only where the body is more than a residual
    ``Sequential`` (ENLCN's long skip, LCoAN's shared attention). The base adds no parameters, so the key
    layout of every network is the official one.

    Forward: LR ``(B, n_colors, h, w)`` in ``[0, rgb_range]`` -> SR ``(B, n_colors, s*h, s*w)`` (not clamped).

    Raises (at call):
        ValueError: ``x`` not a float ``(B, n_colors, h, w)`` image in ``[0, rgb_range]`` or with NaN/Inf.
    """

    #: The class (or classes) of the network's attention modules; ``None`` for a network without attention.
    attention_class: type[nn.Module] | tuple[type[nn.Module], ...] | None = None

    def attention_modules(self) -> list[tuple[str, nn.Module]]:
        """``(name, module)`` of every attention module, in forward order (e.g. ``body.0``, ``body.9``)."""
        if self.attention_class is None:
            return []
        return [(n, m) for n, m in self.named_modules() if isinstance(m, self.attention_class)]

    def build_edsr_layout(self, make_body: Callable[[], Iterable[nn.Module]], *, conv: ConvFactory = default_conv,
                          kernel_size: int = 3, unused_a: bool = False) -> None:
        """Create and register ``[a,] sub_mean, add_mean, head, body, tail`` from ``self.cfg``, in this order.

        The EDSR layout that EDSR, NLSN, DLSN and HSPAN share, in their official construction and
        ``state_dict`` order: ``head = [conv(n_colors -> F)]``, ``body = [*make_body(), conv(F -> F)]`` (called
        after the head is built, so a seeded construction draws the official initial weights),
        ``tail = [Upsampler(scale), conv(F -> n_colors)]``; ``F = cfg.n_feats``, convolutions ``kernel_size``
        wide. ``unused_a``: the unused 1-element parameter ``a`` of the DLSN / HSPAN / LCoAN code, first in their
        checkpoints.

        Raises:
            ValueError: ``cfg.scale`` not supported by :class:`Upsampler`.
        """
        cfg, F, k = self.cfg, self.cfg.n_feats, kernel_size
        if unused_a:
            self.a = nn.Parameter(torch.zeros(1))  # unused in the forward pass, kept for checkpoint compatibility
        self.sub_mean = MeanShift(cfg.rgb_range, DIV2K_MEAN, sign=-1)
        self.add_mean = MeanShift(cfg.rgb_range, DIV2K_MEAN, sign=1)
        self.head = nn.Sequential(conv(cfg.n_colors, F, k))
        self.body = nn.Sequential(*make_body(), conv(F, F, k))
        self.tail = nn.Sequential(Upsampler(conv, cfg.scale, F), conv(F, cfg.n_colors, k))

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        """Deep features after the head: ``(B, F, h, w)`` -> ``(B, F, h, w)``; default ``body(x) + x``."""
        return self.body(x) + x  # long (global) residual skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x: (B, n_colors, h, w)`` in ``[0, rgb_range]`` -> ``(B, n_colors, s*h, s*w)`` (not clamped)."""
        check_image_tensor(x, type(self).__name__, channels=self.cfg.n_colors, rgb_range=self.cfg.rgb_range)
        return self.add_mean(self.tail(self.trunk(self.head(self.sub_mean(x)))))


def config_from_official_args(config_cls: type, args: Mapping[str, Any], names: Sequence[str],
                              renames: Mapping[str, tuple[str, Any]] | None = None) -> Any:
    """A network config from the official code's ``args`` (the ``config`` dict of a reference case).

    Args:
        config_cls: the srlib config dataclass (e.g. :class:`srlib.models.dlsn.DLSNConfig`).
        args: the official ``args`` as a dict; ``scale`` may be a list (the official ``--scale 2+3``) or absent (2).
        names: config fields copied as they are from ``args`` (same name in both).
        renames: ``{field: (official name, default)}`` for fields the official code names differently.
    Returns:
        ``config_cls(scale=..., **fields)``.
    Raises:
        KeyError: ``args`` lacks one of ``names``.
    """
    scale = args.get("scale", 2)
    scale = scale[0] if isinstance(scale, (list, tuple)) else scale
    values = {name: args[name] for name in names}
    for field, (official, default) in (renames or {}).items():
        values[field] = args.get(official, default)
    return config_cls(scale=int(scale), **values)


def official_config_reader(config_cls: type, names: Sequence[str],
                           renames: Mapping[str, tuple[str, Any]] | None = None) -> Callable[[Mapping[str, Any]], Any]:
    """The ``config_from_official(cfg)`` function of a network module: :func:`config_from_official_args` with
    ``config_cls``, ``names`` and ``renames`` fixed.

    The returned function maps the ``config`` dict of a reference case / state-dict listing (the official
    ``args``) to a ``config_cls`` and raises ``KeyError`` if the dict lacks one of ``names``.
    """
    def config_from_official(cfg: Mapping[str, Any]) -> Any:
        return config_from_official_args(config_cls, cfg, names, renames)

    config_from_official.__doc__ = (f":class:`{config_cls.__name__}` from the ``config`` dict of a reference case / "
                                    "state-dict listing (official ``args``).")
    return config_from_official

