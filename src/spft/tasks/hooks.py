"""The one place where a test or a fault-injection harness plugs its own code into a run: ``SPFT_TEST_CALLBACK=
module:Name`` (``module`` importable, e.g. ``tests/`` or ``scripts/`` on ``PYTHONPATH``) adds ``Name()`` to the run.

A Lightning run adds the object as a callback (:func:`spft.tasks.lightning.trainer.build_trainer`); a detection run
registers what its ``ultralytics_callbacks()`` returns (``{event: function(trainer)}``) with the Ultralytics
trainer (:class:`spft.tasks.detection.trainer.SpftTrainerMixin`). The hooks themselves live with the tests
(``tests/run_hooks.py``) and the fault-injection script (``scripts/fault_inject.py``), not in spft.
"""

from __future__ import annotations

import importlib
import os

TEST_CALLBACK_ENV = "SPFT_TEST_CALLBACK"


def injected_callbacks() -> list:
    """``[Name()]`` for ``SPFT_TEST_CALLBACK=module:Name``; ``[]`` when it is unset."""
    spec = os.environ.get(TEST_CALLBACK_ENV)
    if not spec:
        return []
    module, _, name = spec.partition(":")
    return [getattr(importlib.import_module(module), name)()]
