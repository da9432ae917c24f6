"""`spft train`, `--resume` and `spft evaluate` through the real CLI on tiny phantoms with a 2-block Dinov2."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
import yaml
from conftest import run_cli, tiny_overrides
from run_hooks import crash_after_epoch

pytestmark = pytest.mark.slow

CONFIG = "configs/phantom_cxr.yaml"


@pytest.fixture(scope="module")
def finished_run(spft_cache, tmp_path_factory) -> tuple[Path, object]:
    run_dir = tmp_path_factory.mktemp("runs") / "straight"
    # the progress bar on, as a user has it: stderr is a file here, as a sweep's logs/<row>-seed<k>.log is
    proc = run_cli("train", CONFIG, *tiny_overrides(run_dir, extra=("trainer.progress_bar=true",)))
    return run_dir, proc


def _rows(path: Path) -> list[dict]:
    with open(path) as fh:
        return list(csv.DictReader(fh))


def test_train_writes_a_self_describing_run_dir(finished_run):
    run_dir, proc = finished_run
    assert proc.stdout.strip().splitlines()[-1] == str(run_dir)  # last line printed = the run directory
    for name in ("config.yaml", "env.json", "data.json", "history.csv", "class_weights.json", "metrics.json",
                 "predictions_test.csv", "checkpoints/last.ckpt", "checkpoints/best.ckpt", "curves.png", "DONE"):
        assert (run_dir / name).is_file(), name
    assert "stage 1: head only" in proc.stderr and "stage 2: top 1/2 blocks" in proc.stderr
    # a log file gets one line per epoch, no carriage-return frames, no device banners, no v_num
    assert "\r" not in proc.stderr and "GPU available" not in proc.stderr and "TPU available" not in proc.stderr
    assert "v_num" not in proc.stderr
    epochs = [line for line in proc.stderr.splitlines() if line.startswith("Epoch ")]
    assert [line.split(":")[0] for line in epochs] == [f"Epoch {e}" for e in range(4)], proc.stderr
    assert all("batches in" in line and "val/auc=" in line for line in epochs), epochs
    resolved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert resolved["run"]["dir"] == str(run_dir) and resolved["recipe"]["stage1_epochs"] == 1
    env = json.loads((run_dir / "env.json").read_text())
    assert {"torch", "lightning", "transformers", "git_sha", "device"} <= set(env)
    assert env["speed"] == {"attn_implementation": "sdpa", "gradient_checkpointing": False, "channels_last": False,
                            "compile": False, "precision": "32-true"}


def test_history_has_one_row_per_epoch_with_stage_and_lrs(finished_run):
    run_dir, _ = finished_run
    rows = _rows(run_dir / "history.csv")
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2, 3]
    assert [int(r["stage"]) for r in rows] == [1, 2, 2, 2]
    assert [int(r["open_blocks"]) for r in rows] == [0, 1, 2, 2]
    trainable = [int(r["trainable_params"]) for r in rows]
    assert trainable[0] < trainable[1] < trainable[2]
    for key in ("lr_head", "lr_block0", "lr_block1", "train_loss", "val_auc_raw", "val_auc_ema", "w_Nodule"):
        assert key in rows[0], key
    assert float(rows[0]["lr_block1"]) == 0.0 and float(rows[1]["lr_block1"]) > 0.0  # block 1 opens at epoch 1


def test_class_weights_json_records_refinements(finished_run):
    run_dir, _ = finished_run
    cw = json.loads((run_dir / "class_weights.json").read_text())
    assert cw["classes"][:2] == ["Atelectasis", "Cardiomegaly"]
    assert set(cw) >= {"classes", "initial", "after_heuristics", "refinements"}
    assert cw["after_heuristics"]["Nodule"] > cw["initial"]["Nodule"]  # the config's heuristic Nodule: 1.5
    assert [r["epoch"] for r in cw["refinements"]] == [1, 2, 3]  # stage 2 only
    assert sum(cw["initial"].values()) / len(cw["initial"]) == pytest.approx(1.0, abs=1e-5)


def test_metrics_and_predictions_agree(finished_run):
    from spft.metrics import multilabel_auc

    run_dir, _ = finished_run
    metrics = json.loads((run_dir / "metrics.json").read_text())
    rows = _rows(run_dir / "predictions_test.csv")
    classes = list(metrics["per_class_auc"])
    assert metrics["split"] == "test" and metrics["n"] == len(rows)
    probs = torch.tensor([[float(r[f"prob_{c}"]) for c in classes] for r in rows]).numpy()
    labels = torch.tensor([[float(r[f"label_{c}"]) for c in classes] for r in rows]).numpy()
    again = multilabel_auc(probs, labels, classes)
    assert again.macro == pytest.approx(metrics["macro_auc"])
    assert again.excluded == metrics["excluded_classes"]


def test_checkpoints_hold_raw_and_ema_weights(finished_run):
    run_dir, _ = finished_run
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    keys = ckpt["state_dict"].keys()
    assert any(k.startswith("model.encoder.") for k in keys) and any(k.startswith("ema.module.") for k in keys)
    assert "ema.n_averaged" in keys and ckpt["optimizer_states"] and ckpt["lr_schedulers"]
    assert "class_weights" in ckpt["spft"] and "rng" in ckpt["spft"]
    # last.ckpt is the last epoch even when that epoch was not the best (Lightning's save_last alone would not)
    assert ckpt["epoch"] == len(_rows(run_dir / "history.csv")) - 1
    best = torch.load(run_dir / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=False)
    assert best["epoch"] == json.loads((run_dir / "metrics.json").read_text())["best_epoch"]


def test_evaluate_reproduces_test_metrics(finished_run):
    run_dir, _ = finished_run
    proc = run_cli("evaluate", str(run_dir), "--json")
    out = json.loads(proc.stdout)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert out["macro_auc"] == pytest.approx(metrics["macro_auc"], abs=1e-6)
    assert (run_dir / "metrics_test_eval.json").is_file()
    proc = run_cli("evaluate", str(run_dir), "--split", "val")
    assert "macro AUC" in proc.stdout and "(val, n=" in proc.stdout
    proc = run_cli("evaluate", str(run_dir), "data.label_columns=[Nodule, Mass]", check=False)
    assert proc.returncode == 2 and "differ from the run's" in proc.stderr


def test_kill_and_resume_equals_uninterrupted(finished_run, tmp_path):
    straight, _ = finished_run
    run_dir = tmp_path / "killed"
    proc = run_cli("train", CONFIG, *tiny_overrides(run_dir), env=crash_after_epoch(1), check=False)
    assert proc.returncode == 17, proc.stderr
    assert not (run_dir / "DONE").exists() and (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert len(_rows(run_dir / "history.csv")) == 2
    proc = run_cli("train", "--resume", str(run_dir))
    assert proc.stdout.strip().splitlines()[-1] == str(run_dir)
    assert (run_dir / "DONE").is_file()
    assert (run_dir / "history.csv").read_text() == (straight / "history.csv").read_text()
    assert (run_dir / "predictions_test.csv").read_text() == (straight / "predictions_test.csv").read_text()
    a = torch.load(straight / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]
    b = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # resuming a finished run does nothing
    assert run_cli("train", "--resume", str(run_dir)).returncode == 0


def test_refuses_to_overwrite_a_run(finished_run):
    run_dir, _ = finished_run
    proc = run_cli("train", CONFIG, *tiny_overrides(run_dir), check=False)
    assert proc.returncode == 2 and "already holds a run" in proc.stderr


@pytest.mark.parametrize("override, message", [
    ("optim.lr_haed=1e-4", "did you mean 'optim.lr_head'"),
    ("data.label_columns=[Nodule, Nodle]", "column 'Nodle' (from data.label_columns[1]) not found"),
    ("data.views=both", "'data.views': not a key of data.name=phantom; it belongs to data.name chexpert"),
])
def test_bad_input_fails_fast_with_a_named_error(spft_cache, tmp_path, override, message):
    proc = run_cli("train", CONFIG, *tiny_overrides(tmp_path / "r"), override, check=False)
    assert proc.returncode == 2
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "r" / "checkpoints").exists()


def test_missing_image_fails_before_training(spft_cache, tmp_path):
    from spft.config import load_config
    from spft.data.registry import ensure_phantoms

    cfg = load_config(CONFIG, tiny_overrides(tmp_path / "unused"))
    folder = ensure_phantoms(cfg.data.phantom)
    copy = tmp_path / "copy"
    import shutil

    shutil.copytree(folder, copy)
    victim = sorted((copy / "images").iterdir())[5]
    victim.unlink()
    proc = run_cli("train", CONFIG, *tiny_overrides(tmp_path / "r", phantom=False), "data.name=csv",
                   f"data.csv={copy}/labels.csv",
                   "data.split_column=split", "data.patient_column=patient_id",
                   "data.label_columns=[Cardiomegaly, Effusion, Mass]", check=False)
    assert proc.returncode == 2 and victim.name in proc.stderr and "not found" in proc.stderr
