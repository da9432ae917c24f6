"""spft.recipe must import only torch and the standard library (docs/decisions.md, "the one rule")."""

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import spft.recipe

RECIPE_DIR = Path(spft.recipe.__file__).parent
FORBIDDEN = ["lightning", "pytorch_lightning", "ultralytics", "transformers", "numpy"]

_PROBE = """
import json, sys
import torch
after_torch = set(sys.modules)
import spft.recipe
print(json.dumps({"after_torch": sorted(n for n in after_torch if n.split(".")[0] in FORBIDDEN),
                  "after_recipe": sorted(n.split(".")[0] for n in sys.modules if n.split(".")[0] in FORBIDDEN)}))
"""


def test_import_in_fresh_interpreter_pulls_no_engine_or_numpy():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(RECIPE_DIR.parents[1]), env.get("PYTHONPATH", "")])
    code = f"FORBIDDEN = {FORBIDDEN!r}\n" + _PROBE
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    by_torch = {n.split(".")[0] for n in seen["after_torch"]}
    # torch's C extension imports numpy itself when numpy is installed; the recipe must add nothing beyond torch.
    added = set(seen["after_recipe"]) - by_torch
    assert not added, f"importing spft.recipe pulled in {sorted(added)}"
    assert not {"lightning", "pytorch_lightning", "ultralytics", "transformers"} & set(seen["after_recipe"])


def test_recipe_sources_import_only_torch_and_stdlib():
    allowed = {"torch", "__future__", "spft"} | set(sys.stdlib_module_names)
    for path in sorted(RECIPE_DIR.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module]
            else:
                continue
            for name in names:
                assert name.split(".")[0] in allowed, f"{path.name} imports {name}"
                # spft.errors is stdlib-only: the recipe's user errors share the CLI's one-line reporting;
                # spft.compat imports only the standard library (its torch private names import torch when called)
                assert not name.startswith("spft.") or name.startswith(("spft.recipe", "spft.errors", "spft.compat")), \
                    f"{path.name} imports {name}"
