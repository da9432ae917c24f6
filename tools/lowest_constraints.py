"""Print pip constraints that pin every dependency of pyproject.toml to its lower bound (``name==X`` for ``name>=X``).

``make test-lowest`` installs spft with them (``pip install -c``), so the suite runs against the oldest versions
pyproject.toml allows — what ``uv pip install --resolution=lowest-direct`` does, with plain pip. Usage::

    python tools/lowest_constraints.py [--extras detect,export,slurm,track,dev] [--skip torch,torchvision]

``--skip``: packages left to other pins (torch and torchvision come from the Makefile's TORCH_PINS, the builds on
the local wheel cache). A requirement without a ``>=`` bound is left unpinned.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]


def lowest_pins(pyproject: Path, extras: list[str], skip: set[str]) -> list[str]:
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    reqs = list(project.get("dependencies", []))
    optional = project.get("optional-dependencies", {})
    for extra in extras:
        if extra not in optional:
            raise SystemExit(f"no extra {extra!r} in {pyproject} (have: {', '.join(sorted(optional))})")
        reqs += optional[extra]
    pins = {}
    for req in reqs:
        spec = req.split(";")[0].strip()
        name = re.split(r"[<>=!~\[ ]", spec, maxsplit=1)[0].strip()
        lower = re.search(r">=\s*([^,\s]+)", spec)
        if name.lower() in skip or not lower:
            continue
        pins[name.lower()] = f"{name}=={lower.group(1)}"
    return sorted(pins.values())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--extras", default="", help="comma-separated extras whose requirements are pinned too")
    parser.add_argument("--skip", default="", help="comma-separated packages to leave out")
    parser.add_argument("--pyproject", type=Path, default=ROOT / "pyproject.toml")
    args = parser.parse_args(argv)
    extras = [e for e in args.extras.split(",") if e]
    skip = {s.lower() for s in args.skip.split(",") if s}
    sys.stdout.write("".join(f"{pin}\n" for pin in lowest_pins(args.pyproject, extras, skip)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
