"""The front door: an installed wheel carries its configs, options mix with overrides, -v anywhere, --version,
declared dependencies, user errors as one line (exit 2) and bugs as tracebacks (exit 1); the demo's built-in
pretrained encoder (a cache pre-seeded with a tiny folder stands in for the minute of pretraining)."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from conftest import REPO, run_cli
from model_folders import seed_builtin_encoder

from spft import __version__
from spft.cli import build_parser, parse_args


def test_options_and_overrides_mix_in_any_order():
    parser = build_parser()
    args = parse_args(parser, ["repeat", "configs/phantom_cxr.yaml", "--seeds", "0,1", "optim.lr_head=1e-4",
                               "-v", "trainer.max_epochs=2"])
    assert args.seeds == "0,1" and args.verbose
    assert args.overrides == ["optim.lr_head=1e-4", "trainer.max_epochs=2"]
    args = parse_args(build_parser(), ["evaluate", "RUN", "data.csv=x.csv", "--json", "data.root=/d"])
    assert args.json and args.overrides == ["data.csv=x.csv", "data.root=/d"] and args.run_dir == "RUN"
    args = parse_args(build_parser(), ["-v", "data", "check", "configs/phantom_cxr.yaml", "--json", "seed=1"])
    assert args.verbose and args.overrides == ["seed=1"]
    with pytest.raises(SystemExit):
        parse_args(build_parser(), ["report", "SWEEP", "seed=1"])  # report takes no overrides
    with pytest.raises(SystemExit):
        parse_args(build_parser(), ["train", "configs/phantom_cxr.yaml", "--no-such-option"])


def test_version_and_verbose_after_the_subcommand():
    proc = run_cli("--version")
    assert proc.stdout.strip() == f"spft {__version__}"
    proc = run_cli("data", "check", "configs/phantom_cxr.yaml", "-v", "data.phantom.n_images=60",
                   "data.phantom.image_size=32", check=False)
    assert proc.returncode in (0, 1), proc.stderr  # a report, not a usage error


def test_user_errors_are_one_line_and_bugs_keep_their_traceback(tmp_path):
    proc = run_cli("train", "configs/phantom_cxr.yaml", "optim.lr_haed=1e-4", check=False)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "did you mean" in proc.stderr
    proc = run_cli("train", "no/such/config.yaml", check=False)
    assert proc.returncode == 2 and "bundled configs" in proc.stderr
    # a bug (here: a model config transformers cannot build) is not dressed up as a user error
    bug = tmp_path / "bug.py"
    bug.write_text("import sys\nfrom spft import cli\n"
                   "cli.cmd_data_check = lambda args: {}['a bug']\n"
                   "sys.exit(cli.main(sys.argv[1:]))\n")
    proc = subprocess.run([sys.executable, str(bug), "data", "check", "configs/phantom_cxr.yaml"], cwd=REPO,
                          capture_output=True, text=True)
    assert proc.returncode == 1 and "Traceback" in proc.stderr and "KeyError" in proc.stderr


def test_every_imported_third_party_package_is_declared():
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    declared = {re.split(r"[<>=\[ ]", d)[0].lower().replace("-", "_") for d in project["dependencies"]}
    for extra in project["optional-dependencies"].values():
        declared |= {re.split(r"[<>=\[ ]", d)[0].lower().replace("-", "_") for d in extra}
    import_names = {"pillow": "PIL", "scikit_learn": "sklearn", "pyyaml": "yaml", "ensemble_boxes": "ensemble_boxes"}
    provided = {import_names.get(d, d) for d in declared}
    seen = set()
    for path in (REPO / "src" / "spft").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                seen |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                seen.add(node.module.split(".")[0])
    third_party = {m for m in seen if m not in sys.stdlib_module_names and m not in ("spft", "__future__")}
    assert third_party - provided == set(), f"imported but not declared in pyproject.toml: {third_party - provided}"


DEMO_SMALL = ["model.head_hidden=32", "data.phantom.n_images=120", "data.phantom.image_size=48", "trainer.max_epochs=2",
              "recipe.stage1_epochs=1", "data.num_workers=0", "trainer.progress_bar=false"]


@pytest.mark.slow
def test_installed_wheel_runs_the_demo_from_any_directory(spft_cache, tmp_path):
    """`pip install spft` then `spft demo` in an empty folder: the configs travel inside the wheel."""
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist),
                    str(REPO)], check=True, capture_output=True, timeout=300)
    wheel = next(dist.glob("spft-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert {"spft/configs/phantom_cxr.yaml", "spft/configs/phantom_cxr_pretrained.yaml",
            "spft/configs/chestxray14.yaml"} <= set(names)
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                   check=True, capture_output=True, timeout=300)
    workdir = tmp_path / "elsewhere"
    workdir.mkdir()
    seed_builtin_encoder(spft_cache)  # the demo's spft:phantom-dinov2, tiny, instead of a minute of pretraining
    env = {**os.environ, "PYTHONPATH": str(target), "SPFT_CACHE": str(spft_cache)}
    code = "import spft, sys; print(spft.__file__)"
    where = subprocess.run([sys.executable, "-c", code], cwd=workdir, env=env, capture_output=True, text=True)
    assert where.stdout.strip().startswith(str(target)), where.stdout  # the wheel's copy, not the checkout
    demo = subprocess.run([sys.executable, "-m", "spft.cli", "demo", "--out", str(workdir / "run"), *DEMO_SMALL],
                          cwd=workdir, env=env, capture_output=True, text=True, timeout=600)
    assert demo.returncode == 0, demo.stderr
    assert demo.stdout.strip().splitlines()[-1] == str(workdir / "run")
    assert (workdir / "run" / "DONE").is_file()
    # the README's command lines name configs/NAME.yaml: from any directory they find the bundled copy
    check = subprocess.run([sys.executable, "-m", "spft.cli", "data", "check", "configs/phantom_cxr.yaml",
                            "data.phantom.n_images=60", "data.phantom.image_size=32"], cwd=workdir, env=env,
                           capture_output=True, text=True, timeout=300)
    assert check.returncode in (0, 1) and "bundled" in check.stderr, check.stderr


def test_demo_trains_the_builtin_encoder_and_its_run_is_read_back_without_the_cache(tmp_path):
    """`spft demo` runs configs/phantom_cxr_pretrained.yaml: ``model.name: spft:phantom-dinov2`` resolved from the
    cache, the recipe proper (top-k unfreezing, embeddings frozen, low encoder LR). The run's config.yaml keeps the
    name; with the cache wiped, predict and export read the run back (the checkpoint holds every weight, data.json
    the preprocessing) without pretraining the encoder again."""
    import json
    import shutil

    import yaml

    cache = tmp_path / "cache"
    seed_builtin_encoder(cache)
    env = {"SPFT_CACHE": str(cache)}
    run = tmp_path / "run"
    demo = run_cli("demo", "--out", str(run), *DEMO_SMALL, env=env)
    assert demo.stdout.strip().splitlines()[-1] == str(run) and (run / "DONE").is_file()
    assert "phantom_cxr_pretrained.yaml" in demo.stderr and "pretraining" not in demo.stderr
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["model"]["name"] == "spft:phantom-dinov2" and cfg["model"]["config"] is None
    assert cfg["recipe"]["unfreeze"]["embeddings"] is False and cfg["recipe"]["unfreeze"]["top_k"] == 2
    assert cfg["optim"]["lr_encoder"] < cfg["optim"]["lr_head"]
    prep = json.loads((run / "data.json").read_text())["preprocessing"]
    assert prep["source"] == "image_processor:spft:phantom-dinov2" and prep["size"] == 64  # the folder's processor
    image = tmp_path / "x.png"
    shutil.copy(next((cache / "phantoms").rglob("*.png")), image)
    shutil.rmtree(cache)
    pred = run_cli("predict", str(run), str(image), "--out", str(tmp_path / "p.csv"), env=env)
    assert (tmp_path / "p.csv").is_file() and "pretraining" not in pred.stderr
    run_cli("export", str(run), "--out", str(tmp_path / "export"), env=env)
    assert (tmp_path / "export" / "model.safetensors").is_file()
    assert not (cache / "foundation").exists()  # nothing was pretrained


def test_unknown_builtin_model_name_is_a_one_line_error(tmp_path):
    proc = run_cli("train", "configs/phantom_cxr_pretrained.yaml", "model.name=spft:nope", *DEMO_SMALL,
                   f"run.dir={tmp_path / 'run'}", env={"SPFT_CACHE": str(tmp_path)}, check=False)
    assert proc.returncode == 2, proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    assert "spft:nope" in line and "known: spft:phantom-dinov2" in line


def test_demo_config_comment_command_is_valid_for_own_data():
    """configs/phantom_cxr.yaml promises that pointing data.* at your CSV runs: its own command line must load."""
    from spft.config import load_config

    text = (REPO / "configs" / "phantom_cxr.yaml").read_text()
    line = next(ln for ln in text.splitlines() if "spft train configs/phantom_cxr.yaml data.name=csv" in ln)
    overrides = line.split("configs/phantom_cxr.yaml", 1)[1].split()
    cfg = load_config(REPO / "configs" / "phantom_cxr.yaml", overrides)
    assert cfg.data.name == "csv" and cfg.recipe.class_weights.heuristic == {}


def test_configs_in_the_checkout_are_the_bundled_ones():
    assert (REPO / "configs").resolve() == (REPO / "src" / "spft" / "configs").resolve()
    assert Path(os.readlink(REPO / "configs")) == Path("src/spft/configs")
