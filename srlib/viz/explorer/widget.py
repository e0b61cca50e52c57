"""The explorer widget (ipywidgets): :class:`AttentionExplorer`, on top of :mod:`.state` (the numbers) and
:mod:`.picture` (the drawing)."""

from __future__ import annotations

import contextlib
import io
import math
from typing import Any, Mapping, Sequence

import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from srlib.attention import registry

from srlib.analysis.maps import patch_descriptors
from .picture import _load_image, _Picture
from .state import (
    _NONE,
    KNOBS,
    MECHANISMS,
    TEMPERATURES,
    AttentionCache,
    Knob,
    _check_knobs,
    _check_mechanism,
    _check_module,
    module_knobs,
    settable_knobs,
)

__all__ = ["AttentionExplorer"]


class AttentionExplorer:
    """Widget: pick a query pixel and a mechanism and see where that query attends.

    The picture has two panels: the image with the query (cross) and, for bucketed mechanisms, the positions
    sharing its bucket / cluster tinted; and the attention map of that query over the (grey) image, shown as
    ``(weight / max weight)^0.5`` in the ``inferno`` colours. Below it, the numbers of
    :meth:`AttentionState.query`: keys carrying 90% of the weight, largest weight, support, bucket size, keys
    reachable, round weights, ENLA's distance to the exact softmax.

    Controls: mechanism, layer (when several modules are given), query ``x`` / ``y`` sliders (click on the
    picture also sets the query when ``ipyevents`` is installed), and the mechanism's :data:`KNOBS`. A knob
    change computes one :class:`AttentionState` (cached); a query change only computes one row and redraws
    the picture's pixels (:class:`_Picture`: the same ``ipywidgets.Image``, new PNG bytes). How fast it
    answers is measured by ``benchmarks/explorer.py`` (``benchmarks/results/explorer.md``).

    Args:
        image: ``(3, H, W)`` RGB in ``[0, 1]``, a path to an image file, or a sample name (``"astronaut"``).
        features: ``(1, C, h, w)`` features to attend over; default :func:`patch_descriptors` of the image
            (5x5 colour patches, unit norm), after shrinking the image (MATLAB bicubic) so that ``h * w <=
            max_positions``. The map grid is ``(h, w)``; the image is stretched onto it.
        mechanisms: which of :data:`MECHANISMS` to offer.
        layer_modules: ``{mechanism: module | [module, ...] | [(module, features), ...]}`` (trained modules,
            e.g. :func:`collect_attention_layers`); mechanisms not in it use :func:`demo_module`.
        temperature: demo modules' ``cos / temperature`` scores (default 0.05 as notebook 00b).
        seed: seed of every random draw.
        query: initial ``(y, x)`` (default: the centre).
        max_positions: cap on ``h * w`` for the default features (128 * 128).
        normalize_features: L2-normalise ``features`` per position for the demo modules (so that
            ``temperature`` means the same for any input; given modules get them unchanged); default True.
        knobs: initial knob values, ``{mechanism: {knob: value}}`` (e.g. ``{"LCoA": {"n_clusters": 16}}``);
            values outside a slider's options are added to them.
        dpi: size of the picture: each panel about ``3.6 * dpi`` pixels on its longer side (80: 288), at an
            integer number of pixels per grid cell (a 128 x 128 grid: 2, two 256 x 256 panels).

    Attributes:
        widget: the ipywidgets container; ``result``: the last :meth:`AttentionState.query` dict (``None`` before
        the first success); ``error``: the message of the last failed computation or ``None``; ``cache``: the
        :class:`AttentionCache`; ``controls``: ``{name: widget}`` (``mechanism``, ``layer``, ``x``, ``y``);
        ``features`` / ``module_features``: what demo / given modules attend over; ``clickable``: whether
        clicks on the picture set the query (``ipyevents`` installed).

    Raises:
        ValueError: bad image / features / mechanism names / layer modules.
    """

    def __init__(
        self,
        image: Any,
        features: Tensor | None = None,
        mechanisms: Sequence[str] = MECHANISMS,
        layer_modules: Mapping[str, Any] | None = None,
        *,
        temperature: float = 0.05,
        seed: int = 0,
        query: tuple[int, int] | None = None,
        max_positions: int = 128 * 128,
        normalize_features: bool = True,
        knobs: Mapping[str, Mapping[str, Any]] | None = None,
        dpi: int = 80,
    ) -> None:
        self.image = _load_image(image)
        mechanisms = tuple(mechanisms)
        if not mechanisms:
            raise ValueError("mechanisms must name at least one mechanism")
        for m in mechanisms:
            _check_mechanism(m)
        features = self._default_features(max_positions) if features is None else features
        if not isinstance(features, Tensor) or features.dim() != 4 or features.shape[0] != 1:
            raise ValueError(f"features must be (1, C, h, w), got {getattr(features, 'shape', type(features))}")
        self.module_features = features.detach()  # what given modules receive, unchanged
        if normalize_features:
            features = F.normalize(features.detach().float(), dim=1)
        self.features = features.detach()  # what the demo modules receive
        self.temperature = float(temperature)
        self.seed = int(seed)
        self.dpi = int(dpi)
        layer_modules = dict(layer_modules or {})
        for m in layer_modules:
            if m not in mechanisms:
                raise ValueError(f"layer_modules has {m!r}, which is not among the mechanisms {mechanisms}")
        self.layers: dict[str, list[tuple[nn.Module | None, Tensor]]] = {
            m: self._layers_of(m, layer_modules.get(m)) for m in mechanisms
        }
        self.cache = AttentionCache(maxsize=4, max_bytes=64 * 2**20)  # e.g. ENLA's L x m features
        self.result: dict[str, Any] | None = None
        self.error: str | None = None
        self._busy = False
        self._seen: set = set()
        self._picture = _Picture(self.image, panel_px=round(3.6 * self.dpi))
        self.controls = self._make_controls(mechanisms, query)
        self._knob_widgets = {m: {k.name: self._knob_widget(m, k) for k in KNOBS[m]} for m in mechanisms}
        self._set_initial_knobs(mechanisms, knobs or {})
        self._build_layout()
        self.clickable = self._attach_click()
        self._observe(mechanisms)
        self._on_mechanism(None)

    # -- construction helpers ------------------------------------------------------------------------------
    def _default_features(self, max_positions: int) -> Tensor:
        """:func:`patch_descriptors` of the image (5x5 colour patches), shrunk first (MATLAB bicubic) so that
        ``h * w <= max_positions``."""
        img = self.image
        h, w = img.shape[-2:]
        if h * w > max_positions:
            from srlib.data import imresize

            f = math.sqrt(max_positions / (h * w))
            size = (max(8, int(h * f)), max(8, int(w * f)))
            img = imresize(img, output_size=size).clamp(0, 1)
        return patch_descriptors(img, patch_size=5)

    def _make_controls(self, mechanisms: tuple[str, ...], query: tuple[int, int] | None) -> dict[str, Any]:
        """The mechanism, layer, temperature and query controls."""
        import ipywidgets as widgets

        h, w = self.features.shape[-2:]
        qy, qx = query if query is not None else (h // 2, w // 2)
        style = {"description_width": "initial"}
        controls: dict[str, Any] = {}
        controls["mechanism"] = widgets.Dropdown(options=list(mechanisms), value=mechanisms[0],
                                                 description="mechanism", style=style)
        controls["layer"] = widgets.IntSlider(value=0, min=0, max=0, description="layer", style=style,
                                              continuous_update=False)
        # the softmax temperature of the demo modules: scores of unit features are cos / tau (notebook 00b Eq. 4)
        taus = sorted(set(TEMPERATURES) | {self.temperature})
        controls["temperature"] = widgets.SelectionSlider(
            options=[(f"{t:g}", t) for t in taus], value=self.temperature, description="temperature τ",
            style=style, continuous_update=False)
        controls["temperature"].tooltip = "demo modules score two unit features cos / τ: small τ, sharp maps"
        controls["x"] = widgets.IntSlider(value=int(qx), min=0, max=w - 1, description="query x", style=style,
                                          continuous_update=False)
        controls["y"] = widgets.IntSlider(value=int(qy), min=0, max=h - 1, description="query y", style=style,
                                          continuous_update=False)
        for name in ("temperature", "x", "y", "mechanism"):
            controls[name].add_class(f"srlib-explorer-{name}")
        return controls

    def _set_initial_knobs(self, mechanisms: tuple[str, ...], knobs: Mapping[str, Mapping[str, Any]]) -> None:
        for m, values in knobs.items():
            if m not in mechanisms:
                raise ValueError(f"knobs given for {m!r}, which is not among the mechanisms {mechanisms}")
            _check_knobs(m, values)
            for name, value in values.items():
                _set_widget_value(self._knob_widgets[m][name], _NONE if value is None else value)

    def _build_layout(self) -> None:
        """Picture, numbers and the box of knobs under the controls: :attr:`widget`."""
        import ipywidgets as widgets

        self.picture = widgets.Image(format="png")
        self.picture.add_class("srlib-explorer-image")
        self.stats = widgets.HTML()
        self.stats.add_class("srlib-explorer-stats")
        self.knob_box = widgets.HBox()
        c = self.controls
        self.widget = widgets.VBox([
            widgets.HBox([c["mechanism"], c["layer"], c["temperature"]]),
            widgets.HBox([c["x"], c["y"]]),
            self.knob_box,
            self.picture,
            self.stats,
        ])
        self.widget.add_class("srlib-explorer")

    def _observe(self, mechanisms: tuple[str, ...]) -> None:
        self.controls["mechanism"].observe(self._on_mechanism, names="value")
        self.controls["layer"].observe(self._on_knob, names="value")
        self.controls["temperature"].observe(self._on_temperature, names="value")
        self.controls["x"].observe(self._on_query, names="value")
        self.controls["y"].observe(self._on_query, names="value")
        for m in mechanisms:
            for wdg in self._knob_widgets[m].values():
                wdg.observe(self._on_knob, names="value")

    # -- construction helpers ------------------------------------------------------------------------------
    def _layers_of(self, mechanism: str, given: Any) -> list[tuple[nn.Module | None, Tensor]]:
        if given is None:
            return [(None, self.features)]
        items = given if isinstance(given, (list, tuple)) else [given]
        layers = []
        for item in items:
            mod, feats = item if isinstance(item, tuple) else (item, self.module_features)
            _check_module(mechanism, mod)
            if not isinstance(feats, Tensor) or feats.dim() != 4 or feats.shape[0] != 1:
                raise ValueError(f"{mechanism} layer features must be (1, C, h, w), got {tuple(feats.shape)}")
            layers.append((mod, feats.detach()))
        if not layers:
            raise ValueError(f"layer_modules[{mechanism!r}] is empty")
        return layers

    def _knob_widget(self, mechanism: str, knob: Knob):
        import ipywidgets as widgets

        style = {"description_width": "initial"}
        if knob.options is None:
            lo, hi, step = knob.bounds
            cls = widgets.IntSlider if isinstance(knob.default, int) else widgets.FloatSlider
            wdg = cls(value=knob.default, min=lo, max=hi, step=step, description=knob.label, style=style,
                      continuous_update=False)
        elif set(knob.options) == {False, True}:
            wdg = widgets.Checkbox(value=knob.default, description=knob.label, indent=False)
        elif all(isinstance(o, str) for o in knob.options):
            wdg = widgets.Dropdown(options=list(knob.options), value=knob.default, description=knob.label, style=style)
        else:  # ordered numbers; None ("all": full sort) travels as -1 because a selection cannot hold None
            opts = [("all", _NONE) if o is None else (str(o), o) for o in knob.options]
            wdg = widgets.SelectionSlider(options=opts, value=_NONE if knob.default is None else knob.default,
                                    description=knob.label, style=style, continuous_update=False)
        wdg.tooltip = knob.help
        wdg.add_class(f"srlib-explorer-knob-{knob.name}")
        return wdg

    def _attach_click(self) -> bool:
        try:
            from ipyevents import Event
        except ImportError:
            return False
        self._events = Event(source=self.picture, watched_events=["click"])
        self._events.on_dom_event(self._on_click)
        return True

    # -- current selection ---------------------------------------------------------------------------------
    @property
    def mechanism(self) -> str:
        return self.controls["mechanism"].value

    @property
    def query_yx(self) -> tuple[int, int]:
        return int(self.controls["y"].value), int(self.controls["x"].value)

    def knobs(self) -> dict[str, Any]:
        """Knob values the current mechanism and layer are computed with (only settable ones for modules)."""
        m = self.mechanism
        module = self.layers[m][self.controls["layer"].value][0]
        names = [k.name for k in KNOBS[m]] if module is None else settable_knobs(m, module)
        values = {n: self._knob_widgets[m][n].value for n in names}
        return {n: (None if v is _NONE or v == _NONE else v) for n, v in values.items()}

    def state(self) -> dict[str, Any]:
        """The numbers on display: mechanism, layer, query, knobs and the scalar results (no tensors)."""
        out = {"mechanism": self.mechanism, "layer": int(self.controls["layer"].value), "query_yx": self.query_yx,
               "knobs": self.knobs(), "temperature": self.temperature, "error": self.error}
        if self.result is not None:
            for key in ("keys_for_90", "support", "max_weight", "bucket_size", "bucket_sizes", "n_candidates",
                        "round_weights", "tv_to_exact"):
                out[key] = self.result[key]
            out["map_sum"] = float(self.result["map"].double().sum())
        return out

    # -- events --------------------------------------------------------------------------------------------
    def _on_mechanism(self, _change) -> None:
        m = self.mechanism
        layers = self.layers[m]
        lay = self.controls["layer"]
        with self._quiet():
            lay.max = len(layers) - 1
            lay.value = min(lay.value, lay.max)
            lay.layout.display = "none" if len(layers) == 1 else None
            self._sync_knob_widgets()
            self._sync_query_range()
        self.knob_box.children = tuple(self._knob_widgets[m].values())
        self._refresh()

    def _sync_knob_widgets(self) -> None:
        """Show a given module's own knob values (all of them on first use, the fixed ones always) and disable
        the knobs its weights fix (and the temperature, which only the demo modules have)."""
        m = self.mechanism
        layer = int(self.controls["layer"].value)
        module = self.layers[m][layer][0]
        self.controls["temperature"].disabled = module is not None
        if module is None:
            return
        settable = settable_knobs(m, module)
        values = module_knobs(m, module)
        first = (m, layer) not in self._seen
        self._seen.add((m, layer))
        for name, wdg in self._knob_widgets[m].items():
            if name in values and (first or name not in settable):
                _set_widget_value(wdg, _NONE if values[name] is None else values[name])
            wdg.disabled = name not in settable

    def _sync_query_range(self) -> None:
        feats = self.layers[self.mechanism][self.controls["layer"].value][1]
        h, w = feats.shape[-2:]
        self.controls["x"].max, self.controls["y"].max = w - 1, h - 1

    def _on_knob(self, _change) -> None:
        if self._busy:
            return
        with self._quiet():
            self._sync_knob_widgets()
            self._sync_query_range()
        self._refresh()

    def _on_temperature(self, change) -> None:
        self.temperature = float(self.controls["temperature"].value)
        if not self._busy:
            self._refresh()

    def _on_query(self, _change) -> None:
        if not self._busy:
            self._refresh()

    def _on_click(self, event: dict) -> None:
        """ipyevents click on the picture: ``dataX`` / ``dataY`` are pixels of the PNG from its top left."""
        if "dataX" not in event or "dataY" not in event:
            return
        yx = self._picture.position_at(float(event["dataX"]), float(event["dataY"]))
        if yx is None:
            return
        h, w = self.layers[self.mechanism][self.controls["layer"].value][1].shape[-2:]
        if (h, w) != self._picture.grid["hw"]:
            return  # a picture of another grid is on display
        with self._quiet():
            self.controls["y"].value, self.controls["x"].value = yx
        self._refresh()

    @contextlib.contextmanager
    def _quiet(self):
        busy, self._busy = self._busy, True
        try:
            yield
        finally:
            self._busy = busy

    # -- computation and drawing ---------------------------------------------------------------------------
    def compute(self) -> dict[str, Any]:
        """Query result for the current controls (state from the cache; raises what :func:`prepare_attention`
        raises)."""
        m = self.mechanism
        layer = int(self.controls["layer"].value)
        module, feats = self.layers[m][layer]
        state = self.cache.get(m, feats, module, layer=layer, temperature=self.temperature, seed=self.seed,
                               **self.knobs())
        return state.query(self.query_yx)

    def _refresh(self) -> None:
        try:
            self.result = self.compute()
            self.error = None
        except ValueError as err:  # e.g. a knob value the mechanism rejects: say so, keep the old picture
            self.result, self.error = None, str(err)
            self.stats.value = f"<span style='color:#b00'>cannot compute: {_html_escape(self.error)}</span>"
            return
        self.picture.value = self.render_png()
        self.stats.value = self._stats_html()

    def _stats_html(self) -> str:
        r = self.result
        L = r["map"].numel()
        y, x = r["query_yx"]
        parts = [
            f"<b>{r['mechanism']}</b> query (y={y}, x={x})",
            f"keys carrying 90% of the weight: <b class='srlib-k90'>{r['keys_for_90']}</b> of {L}",
            f"largest weight: {r['max_weight']:.4f}",
            f"support (weight &gt; 0): {r['support']}",
        ]
        if r["bucket_size"] is not None:
            what = registry.get(r["mechanism"]).group
            per = ", ".join(str(s) for s in r["bucket_sizes"])
            parts.append(f"{what} size: {r['bucket_size']} (per round: {per})")
            parts.append(f"reachable keys: {r['n_candidates']}")
            parts.append("round weights: " + ", ".join(f"{w:.2f}" for w in r["round_weights"]))
        if r["tv_to_exact"] is not None:
            parts.append(f"distance to exact softmax (TV): {r['tv_to_exact']:.3f}")
        return "<div style='font-family:monospace;font-size:12px'>" + "<br>".join(parts) + "</div>"

    def render_png(self) -> bytes:
        """The two panels for :attr:`result` as PNG bytes (numpy + PIL, see :class:`_Picture`; no matplotlib
        figure, no pyplot state)."""
        if self.result is None:
            raise ValueError("no result to draw (the last computation failed or none ran yet)")
        return self._picture.render(self.result)

    # -- display -------------------------------------------------------------------------------------------
    #: The ``text/plain`` of the displayed explorer: the same on every machine (nbval compares it), shown by
    #: viewers that have neither a kernel nor an image renderer.
    STATIC_TEXT = "AttentionExplorer: run the notebook to make it live"
    #: The line under the stored picture, for viewers without a kernel (GitHub, nbviewer, the course site).
    STATIC_CAPTION = "Static picture of the explorer's first view: run the notebook to make it live."

    def static_png(self) -> bytes:
        """The picture on display (:meth:`render_png`) with :data:`STATIC_CAPTION` under it, as PNG bytes.

        This is what a saved notebook shows where no kernel runs (the live widget needs one).

        Raises:
            ValueError: nothing to draw (the last computation failed).
        """
        from PIL import Image, ImageDraw, ImageFont

        picture = Image.open(io.BytesIO(self.render_png())).convert("RGB")
        try:
            font = ImageFont.load_default(size=11)
        except (TypeError, OSError):  # Pillow without FreeType: the bitmap font
            font = ImageFont.load_default()
        measure = ImageDraw.Draw(picture)
        width = picture.width - 2 * _Picture.MARGIN
        lines: list[str] = []
        for word in self.STATIC_CAPTION.split():  # wrap to the picture's width
            if lines and measure.textlength(f"{lines[-1]} {word}", font=font) <= width:
                lines[-1] = f"{lines[-1]} {word}"
            else:
                lines.append(word)
        line_h = _Picture.TITLE - 2
        out = Image.new("RGB", (picture.width, picture.height + line_h * len(lines) + _Picture.MARGIN), "white")
        out.paste(picture, (0, 0))
        draw = ImageDraw.Draw(out)
        for i, line in enumerate(lines):
            draw.text((_Picture.MARGIN, picture.height + i * line_h), line, fill=(70, 70, 70), font=font)
        buf = io.BytesIO()
        out.save(buf, format="PNG", optimize=True)
        return buf.getvalue()

    def _repr_mimebundle_(self, include=None, exclude=None) -> dict[str, Any]:
        """The live widget's view, a static picture of the current view (``image/png``) and a fixed
        ``text/plain``: a front end with a kernel shows the widget, one without it (GitHub, nbviewer, the
        course site) shows the picture instead of the widget's ``VBox(children=...)`` text."""
        import base64

        bundle = dict(self.widget._repr_mimebundle_() or {})  # the widget view (none once the widget is closed)
        bundle["text/plain"] = self.STATIC_TEXT
        if self.result is not None:
            bundle["image/png"] = base64.b64encode(self.static_png()).decode("ascii")
        return bundle

    def show(self):
        """Display the explorer (widget, with its static picture for viewers without a kernel) and return the
        widget."""
        from IPython.display import display

        display(self)
        return self.widget


def _set_widget_value(wdg: Any, value: Any) -> None:
    """Set a knob widget to a module's value, widening its options / range when the value lies outside."""
    options = getattr(wdg, "options", None)
    if options is not None and not isinstance(value, bool):
        pairs = [o if isinstance(o, tuple) else (str(o), o) for o in options]
        values = [v for _, v in pairs]
        if value not in values:
            if all(isinstance(v, str) for v in values):
                wdg.options = [*values, value]
            else:
                merged = sorted({v for v in values if v != _NONE} | {value})
                wdg.options = [(str(v), v) for v in merged] + ([("all", _NONE)] if _NONE in values else [])
    elif hasattr(wdg, "max") and not isinstance(value, bool):
        wdg.max, wdg.min = max(wdg.max, value), min(wdg.min, value)
    wdg.value = value


def _html_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
