"""Where srlib looks for data.

One setting, the ``SRLIB_DATA`` environment variable, tells srlib, the tests and the notebooks where the
benchmark and training data live. Default: the ``data/`` folder of the repository (where
``python -m srlib.data.download`` puts archives). CI points it at the shared read-only copy.
"""

from __future__ import annotations

import os
from pathlib import Path

#: Repository root (the folder that holds ``srlib/``, ``notebooks/`` and ``data/``).
REPO_ROOT = Path(__file__).resolve().parent.parent


def data_dir() -> Path:
    """Return the data root: ``$SRLIB_DATA`` if set, else ``<repo>/data``.

    The folder need not exist; callers that need it raise their own error naming the path.
    """
    env = os.environ.get("SRLIB_DATA")
    return Path(env).expanduser().resolve() if env else REPO_ROOT / "data"
