"""spft's exception hierarchy: what the user can fix, versus bugs.

Every error a user can act on (a config key, a data file, a run directory, a checkpoint, an interrupted or diverged
run) is a :class:`SpftError`; the CLI prints it as one line naming the file, row or key and exits with its
``exit_code`` (2 unless said otherwise). Anything else reaching the CLI is a bug in spft and keeps its traceback
(exit 1). Each subclass also derives from the built-in exception it refines (``ValueError``, ``FileNotFoundError``
...), so library callers that catch the built-in keep working.
"""

from __future__ import annotations


class SpftError(Exception):
    """A problem the user can fix; printed as one line by the CLI."""

    exit_code = 2


class ConfigError(SpftError, ValueError):
    """A config file, key or override that does not match the schema; the message names the key."""


class DataError(SpftError, ValueError):
    """A data file (CSV, image, annotation) that cannot be used as it is; the message names the file and row."""


class BadImageError(DataError):
    """An image file that cannot be used (missing, empty, truncated, not an image, too many pixels): one line that
    names the file. Raised in a DataLoader worker, torch re-raises it in the main process as
    ``BadImageError("Caught BadImageError in DataLoader worker process N. Original Traceback ...")``; that text is
    reduced here to the original one-line message, so the CLI never prints a worker traceback."""

    def __init__(self, message: object = "", *args):
        text = str(message)
        if text.startswith("Caught BadImageError") and "Traceback" in text:
            where = text.splitlines()[0].removeprefix("Caught BadImageError ").rstrip(".")
            last = [line for line in text.splitlines() if line.strip()][-1]
            text = f"{last.partition('BadImageError: ')[2] or last} ({where})"
        super().__init__(text, *args)


class MissingKeyError(SpftError, KeyError):
    """A column, structure or class name that the data does not have; the message names it and what exists."""

    def __str__(self) -> str:  # KeyError quotes its message; this one is a sentence
        return str(self.args[0]) if self.args else ""


class MissingFileError(SpftError, FileNotFoundError):
    """A file or folder the user pointed at does not exist."""


class RunDirError(SpftError, FileExistsError):
    """A run directory that cannot be used: already holding another run, locked by another process, not a run."""


class CheckpointError(SpftError, ValueError):
    """A checkpoint or weights file that is damaged, unsafe to load, or does not belong to this run."""


class DependencyError(SpftError, ModuleNotFoundError):
    """An optional dependency a chosen feature needs is not installed."""


class TrackingError(SpftError, ConnectionError):
    """A tracking server (MLflow) did not take what ``spft track push`` sent; training itself never raises it."""


class StorageError(SpftError, OSError):
    """The disk refused a write (full, read-only); the message names the file. Earlier good files are kept."""


class TrainingDiverged(SpftError, RuntimeError):
    """A non-finite loss or gradient: the run stops at that step, keeping its last good checkpoint."""

    exit_code = 3


class RunInterrupted(SpftError):
    """A run stopped by a signal after saving ``last.ckpt``; exit 128 + the signal number (130 SIGINT, 143 SIGTERM)."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = int(signum)
        self.exit_code = 128 + self.signum
