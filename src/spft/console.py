"""Where spft's output goes: whether a stream is a terminal (progress bars and live tables draw there; a log file,
a pipe or a SLURM log gets plain lines instead). Standard library only, so the CLI can ask before anything heavy is
imported."""

from __future__ import annotations


def is_terminal(stream) -> bool:
    """Whether ``stream`` is an interactive terminal (False for no ``isatty``, a closed stream, or a pipe)."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):  # no isatty, or a closed stream
        return False
