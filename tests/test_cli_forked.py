"""The suite's forked CLI runs (tests/cli_zygote.py) behave as a fresh ``python -m spft.cli``: the same run, the same
files, the same exit codes and one-line errors — so that the time they save costs no realism."""

from __future__ import annotations

import csv

import pytest
from conftest import run_cli, tiny_overrides

CONFIG = "configs/phantom_cxr.yaml"


def _rows(path):
    with open(path) as fh:
        return list(csv.DictReader(fh))


@pytest.mark.slow
def test_a_forked_run_equals_a_fresh_one(spft_cache, tmp_path):
    extra = ("data.num_workers=2",)  # DataLoader workers: forked from the run's process as in a fresh one
    fresh = run_cli("train", CONFIG, *tiny_overrides(tmp_path / "fresh", epochs=3, extra=extra), fresh=True)
    forked = run_cli("train", CONFIG, *tiny_overrides(tmp_path / "forked", epochs=3, extra=extra))
    assert fresh.stdout.splitlines()[-1] == str(tmp_path / "fresh")
    assert forked.stdout.splitlines()[-1] == str(tmp_path / "forked")
    for name in ("history.csv", "predictions_test.csv"):
        assert _rows(tmp_path / "fresh" / name) == _rows(tmp_path / "forked" / name), name
    assert (tmp_path / "forked" / "DONE").is_file()


@pytest.mark.parametrize("fresh", [True, False])
def test_errors_and_exit_codes_are_those_of_a_fresh_process(tmp_path, fresh):
    bad = run_cli("train", CONFIG, "optim.lr_hed=1e-3", check=False, fresh=fresh)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert "optim.lr_hed" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1, bad.stderr
    ok = run_cli("config", CONFIG, "seed=3", fresh=fresh)
    assert ok.returncode == 0 and "seed: 3" in ok.stdout
