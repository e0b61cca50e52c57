"""Everything the course notebooks use that is not the library itself: one home for notebook helpers.

==================================  ===========================================================================
``srlib.course.recipe``             the one tiny-training recipe (:data:`TINY_RECIPE`, :func:`tiny_train`) and
                                    the shipped networks as the tables evaluate them (:func:`shipped`)
``srlib.course.tables``             the quality table (:func:`quality_table`, :func:`format_quality_table`)
``srlib.course.spread``             the measured spread of the tiny runs (:func:`assert_in_spread`; the
                                    measurements are ``srlib/spread/NN.json``)
``srlib.course.cells``              cells every paper notebook repeats: the GPU training switch
                                    (:func:`paper_training`), the evaluation table (:func:`evaluation_table`)
                                    and the SR crop figure (:func:`sr_crops`)
``srlib.course.dlsn``               notebook 03: ``study`` (measurements) and ``figures`` (drawing)
``srlib.course.lcoan``              notebook 05: ``study`` (measurements) and ``figures`` (drawing)
``srlib.course.exercises``          the self-checking exercises (``check``, ``hint``, ``solution``, ``score``),
                                    one module ``nbNN.py`` per notebook
==================================  ===========================================================================

Where a new helper goes: a helper used by several notebooks goes in a module of this package (re-exported
here when the notebooks import it by name); a helper of one notebook goes in that notebook's subpackage, its
measurements in ``study.py`` (no drawing) and its pictures in ``figures.py`` (matplotlib). Measurements the
interactive explorer also needs stay in :mod:`srlib.analysis`, generic pictures in :mod:`srlib.viz`.
``srlib.course`` is the top layer: nothing else in srlib imports it.
"""

from srlib.course.cells import SET5_X2_BICUBIC, evaluation_table, full_run_requested, paper_training, sr_crops
from srlib.course.recipe import DENSE_OVERLAP, DENSE_TILE, TINY_RECIPE, Entry, shipped, tiny_config, tiny_train
from srlib.course.spread import SPREAD_DIR, assert_in_spread, data_setting, load_spread, spread_band, summarise
from srlib.course.tables import format_quality_table, quality_table

__all__ = ["TINY_RECIPE", "tiny_config", "tiny_train", "shipped", "quality_table", "format_quality_table",
           "data_setting", "summarise", "load_spread", "spread_band", "assert_in_spread", "DENSE_TILE",
           "DENSE_OVERLAP", "SPREAD_DIR", "Entry", "paper_training", "full_run_requested", "sr_crops",
           "evaluation_table", "SET5_X2_BICUBIC"]
