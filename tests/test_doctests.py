"""The ``>>>`` examples in src/spft's docstrings run and hold: every module that contains one is doctested.

The modules are found by scanning the source for ``>>>`` (a new example is picked up without touching this file)
and imported one by one, so modules without examples — and the optional heavy ones they would pull in — are never
imported here. A module under ``spft.tasks.detection`` needs ultralytics (the ``detect`` extra) and is skipped
without it.
"""

from __future__ import annotations

import doctest
import importlib
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"


def modules_with_examples() -> list[str]:
    """Dotted names of the modules under src/spft whose text contains a ``>>>`` line."""
    names = []
    for path in sorted((SRC / "spft").rglob("*.py")):
        if any(line.lstrip().startswith(">>>") for line in path.read_text(encoding="utf-8").splitlines()):
            parts = path.relative_to(SRC).with_suffix("").parts
            names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


MODULES = modules_with_examples()


def test_examples_were_found():
    assert len(MODULES) >= 10, MODULES  # the scan itself works (src/spft holds a few dozen examples)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    # detection modules import ultralytics: `make test` installs the detect extra, so it is never skipped
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False,
                             report=True)
    assert result.attempted > 0, f"{name}: '>>>' found in the file but no doctest was collected"
    assert result.failed == 0, f"{name}: {result.failed} of {result.attempted} doctest examples failed (see above)"
