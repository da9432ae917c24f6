"""The command lines of README.md and the docs site (docs/*.md) are real: every ``spft ...`` line in a code block
parses with spft's own parser, and every one that names a config loads it with its overrides (unknown or misspelt
keys, keys of another task or dataset, bad values all fail here), so a renamed option or key cannot leave the
documentation behind. Synopsis lines (``[--split S]``, ``best|last``, ``...``) are skipped; the links between the
pages are checked by ``mkdocs build --strict`` (``make test``, ``make docs``)."""

from __future__ import annotations

import re
import shlex

import pytest
from conftest import REPO

from spft.cli import build_parser, parse_args
from spft.config import load_config

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
WITH_CONFIG = {"train", "repeat", "ablate", "config", "check", "cache", "vindr-cxr", "tbx11k"}


def command_lines(path):
    """(line number, argv after ``spft``) of every ``spft`` command in the file's fenced code blocks."""
    found, fence, pending, start = [], False, "", 0
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        stripped = line.strip()
        if stripped.startswith("```"):
            fence, pending = not fence, ""
            continue
        if not fence:
            continue
        if pending:
            pending += " " + stripped
        elif line.startswith("spft "):  # a command starts the line (indented lines are program output)
            pending, start = stripped, number
        else:
            continue
        if pending.endswith("\\"):
            pending = pending[:-1]
            continue
        text, pending = pending, ""
        text = re.sub(r"\s+#.*$", "", text)  # a trailing comment
        if "..." in text or "$(" in text:
            continue
        argv = shlex.split(text)[1:]
        if any(t.startswith("[") and "=" not in t or ("|" in t and "=" not in t) for t in argv):
            continue  # a synopsis: optional parts, alternatives
        found.append((start, argv))
    return found


COMMANDS = [(f"{path.name}:{number}", argv) for path in PAGES for number, argv in command_lines(path)]


def test_the_pages_hold_commands():
    names = {c.split(":")[0] for c, _ in COMMANDS}
    assert {"README.md", "cli.md", "data.md", "using-a-model.md", "detection.md", "segmentation.md"} <= names, names
    assert len(COMMANDS) >= 60, len(COMMANDS)


@pytest.mark.parametrize("where,argv", COMMANDS, ids=[c for c, _ in COMMANDS])
def test_documented_command_parses_and_its_config_loads(where, argv):
    try:
        args = parse_args(build_parser(), list(argv))
    except SystemExit:
        pytest.fail(f"{where}: spft {' '.join(argv)} does not parse")
    config = getattr(args, "config", None)
    leaf = argv[1] if argv[0] in ("data", "prepare") else argv[0]
    if leaf in WITH_CONFIG and config and not getattr(args, "resume", None) and not getattr(args, "keys", None):
        overrides = [o for o in getattr(args, "overrides", None) or [] if not o.startswith("run.dir=")]
        load_config(REPO / config, overrides)
