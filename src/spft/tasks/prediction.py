"""What every task's ``predict`` returns, and how ``spft predict`` writes it (task-agnostic).

:class:`Predictions` is a table (one row per image that was predicted, in input order, first column ``id``) plus the
inputs that could not be predicted (:class:`spft.data.inputs.Failure`: id and a one-line reason). :meth:`write`
puts the table at ``out`` and the failures in the sidecar ``<out stem>.failed.csv`` (columns ``path``, ``error``),
removing a stale sidecar of an earlier call when nothing failed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from spft.data.inputs import Failure


@dataclass
class Predictions:
    table: pd.DataFrame
    failures: list[Failure] = field(default_factory=list)
    source: str = ""  # the run directory or export folder that predicted
    name: str = ""  # its name, for the default output file

    def failed_path(self, out: str | Path) -> Path:
        out = Path(out)
        return out.with_name(out.name[: -len(out.suffix)] + ".failed.csv" if out.suffix else out.name + ".failed.csv")

    def write(self, out: str | Path) -> tuple[Path, Path | None]:
        """Write the table (and the failures' sidecar, when any); returns both paths (``None``: no failures)."""
        from spft.experiments.rundir import atomic_write_csv, atomic_write_text

        out = Path(out).expanduser()
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out, self.table.to_csv(index=False, lineterminator="\n"))
        sidecar = self.failed_path(out)
        if self.failures:
            atomic_write_csv(sidecar, [{"path": f.id, "error": f.error} for f in self.failures], ["path", "error"])
            return out, sidecar
        sidecar.unlink(missing_ok=True)
        return out, None
