"""srlib: non-local attention for single-image super-resolution, notebook-first.

Reproduces five papers (NLSN, ENLCN, DLSN, HSPAN, LCoAN). Subpackages:

* :mod:`srlib.attention` -- the attention mechanisms, the shared bucket machinery and ``registry`` (one list of
  mechanisms: class, knobs, demo module, FLOP and benchmark references)
* :mod:`srlib.models`    -- EDSR-style blocks and the networks, ``build_model`` registry
* :mod:`srlib.data`      -- image I/O, MATLAB-compatible bicubic, degradations, datasets
* :mod:`srlib.metrics`   -- PSNR / SSIM under the standard SR protocol
* :mod:`srlib.train`     -- training loop and CLI (``python -m srlib.train``)
* :mod:`srlib.inference` -- tiled inference and x8 self-ensemble
* :mod:`srlib.reference` -- runner for the official-code reference cases
* :mod:`srlib.analysis`  -- numbers about attention: FLOPs, measured time / memory, sparsity, overlap, hashing
* :mod:`srlib.viz`       -- pictures of those numbers and the interactive attention explorer
  (``srlib.viz.explorer`` is a package: state, picture, widget)
* :mod:`srlib.course`    -- what only the notebooks use: tiny recipe, quality table, measured spread, each
  notebook's study and figures (:mod:`srlib.course.dlsn`, :mod:`srlib.course.lcoan`) and the self-checking
  exercises (:mod:`srlib.course.exercises`); with :mod:`srlib.viz`, the only packages that draw
"""

__version__ = "0.1.0"

# ``srlib.pretrained("hspan-small-x2")``: the shipped trained weights (imports torch).
from srlib.pretrained import list_pretrained, pretrained  # noqa: E402

# ``srlib.set_input_checks(False)``: skip the NaN/Inf and value-range checks at the top of every forward.
from srlib._checks import input_checks_enabled, set_input_checks  # noqa: E402

__all__ = ["__version__", "input_checks_enabled", "list_pretrained", "pretrained", "set_input_checks"]
