"""Per-task configs: keys a task's engine cannot honour are refused (naming the key and why), a run's config.yaml
holds only what applies, old run configs with other tasks' default sections still load, every key is documented,
docs/config-keys.md is `spft config --keys`, and misspelt keys are matched at every level."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from spft.cli import main
from spft.config import ConfigError, dump_yaml, load_config, to_dict
from spft.config.keys import key_docs, keys_markdown
from spft.config.loader import all_keys
from spft.config.schema import not_applicable, not_applicable_table, task_names

ROOT = Path(__file__).resolve().parents[1]
DETECT = ROOT / "configs" / "phantom_detect_yolov8.yaml"
SEGMENT = ROOT / "configs" / "phantom_segment_sam2.yaml"
CLASSIFY = ROOT / "configs" / "phantom_cxr.yaml"


@pytest.mark.parametrize("config, override, reason", [
    (DETECT, "trainer.devices=2", "Ultralytics runs on one device"),
    (DETECT, "trainer.devices=1", "Ultralytics runs on one device"),  # set explicitly: refused even at the default
    (DETECT, "trainer.precision=bf16-mixed", "AMP"),
    (DETECT, "trainer.compile=true", "torch.compile"),
    (DETECT, "data.augment.enabled=true", "detection.mosaic"),
    (DETECT, "segmentation.n_overlays=2", "task: segmentation only"),
    (DETECT, "evaluation.calibration=temperature", "classification runs only"),
    (SEGMENT, "data.augment.rotate=3", "box_jitter"),
    (SEGMENT, "data.image_cache=/tmp/x", "prepare cache"),
    (SEGMENT, "detection.imgsz=64", "task: detection only"),
    (CLASSIFY, "segmentation.structures=[heart]", "task: segmentation only"),
    (CLASSIFY, "data.masks_csv=/x.csv", "CheXmask"),
])
def test_a_key_the_task_cannot_honour_is_refused_naming_key_and_why(config, override, reason):
    key = override.split("=")[0]
    with pytest.raises(ConfigError) as err:
        load_config(config, [override])
    message = str(err.value)
    assert f"'{key}': not available for " in message and reason in message, message


def test_a_non_applicable_key_in_the_file_is_refused(tmp_path):
    bad = tmp_path / "det.yaml"
    tree = yaml.safe_load(DETECT.read_text())
    tree["trainer"]["progress_bar"] = False
    bad.write_text(yaml.safe_dump(tree))
    with pytest.raises(ConfigError, match=r"det.yaml: 'trainer.progress_bar': not available for detection"):
        load_config(bad)


@pytest.mark.parametrize("config", [DETECT, SEGMENT, CLASSIFY], ids=lambda p: p.stem)
def test_config_yaml_holds_only_what_applies_and_round_trips(config, tmp_path):
    cfg = load_config(config, ["trainer.max_epochs=3"])
    tree = yaml.safe_load(dump_yaml(cfg))
    for key in not_applicable_table(cfg.task):
        node = tree
        for part in key.split(".")[:-1]:
            node = node[part]
        assert key.split(".")[-1] not in node, key
    assert tree["trainer"]["max_epochs"] == 3 and tree["task"] == cfg.task
    again = load_config(None, base=tree)  # what resume / evaluate do with a run's config.yaml
    assert again == cfg


def test_detection_yaml_is_short():
    text = dump_yaml(load_config(DETECT))
    assert "segmentation:" not in text and "evaluation:" not in text and "devices:" not in text
    assert "precision:" not in text and "augment:" not in text and "detection:" in text


@pytest.mark.parametrize("config", [DETECT, SEGMENT, CLASSIFY], ids=lambda p: p.stem)
def test_an_old_run_config_with_every_section_at_its_default_still_loads(config):
    cfg = load_config(config)
    old = to_dict(cfg, full=True)  # config.yaml as written before configs were per task
    assert "segmentation" in old and "detection" in old and "devices" in old["trainer"]
    assert load_config(None, base=old) == cfg
    assert load_config(None, ["trainer.max_epochs=4"], base=old).trainer.max_epochs == 4


def test_an_old_run_config_with_a_non_default_ignored_key_is_refused_naming_it():
    old = to_dict(load_config(DETECT), full=True)
    old["trainer"]["devices"] = 2
    with pytest.raises(ConfigError, match=r"'trainer.devices': not available for detection: Ultralytics runs on one "
                                          r"device.*got 2; leave it at its default 1"):
        load_config(None, base=old)
    old = to_dict(load_config(DETECT), full=True)
    old["segmentation"]["n_overlays"] = 3
    with pytest.raises(ConfigError, match=r"'segmentation.n_overlays': not available for detection"):
        load_config(None, base=old)


def test_detection_checks_run_at_load_time_with_their_messages():
    with pytest.raises(ConfigError, match=r"'detection.imgsz': expected an integer >= 32, got 16"):
        load_config(DETECT, ["detection.imgsz=16"])
    with pytest.raises(ConfigError, match=r"data.name: detection needs one of phantom_detect, vindr_cxr, tbx11k"):
        load_config(DETECT, ["data.name=phantom"])
    with pytest.raises(ConfigError, match=r"'model.name': detection needs an Ultralytics model"):
        load_config(DETECT, ["model.name=null"])


def test_former_post_init_checks_run_in_the_schema_validation():
    for override, message in [("data.image_size=0", "'data.image_size': expected a positive number"),
                              ("trainer.limit_train_batches=0", "'trainer.limit_train_batches': expected a number"),
                              ("evaluation.threshold=sensitivity", "'evaluation.target': evaluation.threshold="),
                              ("data.num_workers=-1", "data.num_workers must be >= 0"),
                              ("data.augment.hflip=2", "data.augment: hflip is a probability")]:
        with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
            load_config(CLASSIFY, [override])
    with pytest.raises(ConfigError, match="is not a segmentation dataset"):
        load_config(SEGMENT, ["data.name=phantom"])


@pytest.mark.parametrize("key, expected", [
    ("data.n_images", "data.phantom.n_images"),
    ("trainer.imgsz", "detection.imgsz"),
    ("optim.lr_haed", "optim.lr_head"),
    ("structures", "segmentation.structures"),
])
def test_a_misspelt_key_is_matched_at_every_level(key, expected):
    with pytest.raises(ConfigError, match=f"unknown config key '{key}' — did you mean '{expected}'"):
        load_config(CLASSIFY, [f"{key}=1"])


def test_every_key_has_a_type_default_and_doc():
    rows = key_docs()
    leaves = [k for k in all_keys() if not any(other.startswith(k + ".") for other in all_keys())]
    assert [r.key for r in rows] == leaves
    undocumented = [r.key for r in rows if not r.doc]
    assert not undocumented, f"add a trailing # comment in src/spft/config/schema.py for {undocumented}"
    assert all(r.type and r.default and r.tasks for r in rows)


def test_every_not_applicable_entry_names_a_schema_key_and_a_reason():
    keys = set(all_keys())
    for task in task_names():
        for key, why in not_applicable_table(task).items():
            assert key in keys and why, (task, key)
    assert not_applicable("detection", "segmentation.structures") is not None
    assert not_applicable("classification", "trainer.devices") is None


def test_docs_config_keys_is_the_output_of_spft_config_keys(capsys):
    assert main(["config", "--keys"]) == 0
    out = capsys.readouterr().out
    assert out == keys_markdown()
    assert (ROOT / "docs" / "config-keys.md").read_text() == out, \
        "docs/config-keys.md is stale: run `spft config --keys > docs/config-keys.md`"
    assert "[docs/config-keys.md](docs/config-keys.md)" in (ROOT / "README.md").read_text()


def test_spft_config_keys_for_one_task_lists_only_its_keys(capsys):
    assert main(["config", "--keys", "detection"]) == 0
    out = capsys.readouterr().out
    assert "`detection.imgsz`" in out and "`trainer.devices`" in out  # the latter in 'Not available for detection'
    table = out.split("## Not available")[0]
    assert "`trainer.devices`" not in table and "`segmentation.structures`" not in table
    assert main(["config", "--keys", "nope"]) == 2


def test_spft_config_prints_the_resolved_config(capsys):
    assert main(["config", str(DETECT), "trainer.max_epochs=3"]) == 0
    out = capsys.readouterr().out
    tree = yaml.safe_load(out)
    assert tree["trainer"]["max_epochs"] == 3 and "segmentation" not in tree and tree["name"] == DETECT.stem
    assert main(["config", str(DETECT), "trainer.devices=2"]) == 2
    assert "'trainer.devices': not available for detection" in capsys.readouterr().err


def test_every_shipped_config_dumps_what_it_loads():
    for path in sorted((ROOT / "configs").glob("*.yaml")):
        cfg = load_config(path)
        assert dataclasses.asdict(load_config(None, base=yaml.safe_load(dump_yaml(cfg)))) == dataclasses.asdict(cfg)
