"""Child processes of a serving process (large imports, training): below serving's priority,
running this very copy of the package."""

from __future__ import annotations

import os
from pathlib import Path

# Serving comes first: an import or a training may take longer.
CHILD_NICENESS = 10
# The folder holding this copy of the package: the child runs it, wherever the server found it.
_PACKAGE_ROOT = Path(__file__).resolve().parents[2]


def child_env() -> dict[str, str]:
    """This process's environment, with this copy of the package first on the path."""
    paths = [str(_PACKAGE_ROOT), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}


def lower_priority() -> None:
    """In the child (a `preexec_fn`, or its first step): serving's CPU comes first."""
    os.nice(CHILD_NICENESS)
