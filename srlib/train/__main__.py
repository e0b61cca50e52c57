"""``python -m srlib.train``: the training command line (:func:`srlib.train.cli.main`)."""

import sys

from .cli import main

sys.exit(main())
