"""Per-task, per-dataset configs: each task declares its sections' classes and each dataset has its own class; a key
of another engine or dataset is refused naming who reads it, a run's config.yaml holds exactly its schema, old run
configs (every key of every task and dataset, the others at their defaults) still load with one line saying so,
every key is documented, docs/config-keys.md is `spft config --keys`, and misspelt keys are matched at every level."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from spft.cli import main
from spft.config import ConfigError, dump_yaml, load_config, to_dict
from spft.config.keys import key_docs, keys_markdown
from spft.config.loader import _leaf_keys, all_keys, schema_for
from spft.tasks.registry import TASKS, get_task

ROOT = Path(__file__).resolve().parents[1]
DETECT = ROOT / "configs" / "phantom_detect_yolov8.yaml"
SEGMENT = ROOT / "configs" / "phantom_segment_sam2.yaml"
CLASSIFY = ROOT / "configs" / "phantom_cxr.yaml"


@pytest.mark.parametrize("config, override, reason", [
    (DETECT, "trainer.devices=2", "(Ultralytics engine): its trainer section has no 'devices'"),
    (DETECT, "trainer.devices=1", "its trainer section has no 'devices'"),  # set explicitly: refused at the default
    (DETECT, "trainer.precision=bf16-mixed", "task classification, segmentation read(s) it"),
    (DETECT, "trainer.compile=true", "its trainer section has no 'compile'"),
    (DETECT, "segmentation.n_overlays=2", "'segmentation' is a section of task segmentation only"),
    (DETECT, "evaluation.calibration=temperature", "'evaluation' is a section of task classification only"),
    (DETECT, "model.config={}", "its model section has no 'config'"),
    (DETECT, "loss=ce", "Ultralytics' own detection loss"),  # a shared key the task declares it cannot honour
    (DETECT, "recipe.unfreeze.embeddings=true", "no embeddings part"),
    (SEGMENT, "detection.imgsz=64", "'detection' is a section of task detection only"),
    (SEGMENT, "model.head_hidden=8", "(Lightning engine): its model section has no 'head_hidden'"),
    (CLASSIFY, "segmentation.structures=[heart]", "a section of task segmentation only"),
])
def test_a_key_the_task_cannot_honour_is_refused_naming_key_and_why(config, override, reason):
    key = override.split("=")[0]
    with pytest.raises(ConfigError) as err:
        load_config(config, [override])
    message = str(err.value)
    assert f"'{key}': not available for " in message and reason in message, message


@pytest.mark.parametrize("config, override, owners", [
    (DETECT, "data.augment.enabled=true", "csv, "),
    (DETECT, "data.color=rgb", "csv, "),
    (SEGMENT, "data.image_cache=/tmp/x", "csv, "),
    (CLASSIFY, "data.masks_csv=/x.csv", "chexmask"),
    (CLASSIFY, "data.views=both", "chexpert"),
    (CLASSIFY, "data.csv=x.csv", "csv, chestxray14, ham10000, mask_folder"),
])
def test_a_key_of_another_dataset_is_refused_naming_the_datasets_that_have_it(config, override, owners):
    key = override.split("=")[0]
    with pytest.raises(ConfigError) as err:
        load_config(config, [override])
    name = load_config(config).data.name
    assert f"'{key}': not a key of data.name={name}; it belongs to data.name {owners}" in str(err.value), err.value
    assert "chexmask" not in str(err.value) or key != "data.augment.enabled"


def test_switching_data_name_by_override_drops_the_file_keys_of_the_other_dataset(caplog):
    # the README's line: the demo config on your own CSV (data.phantom in the file is not a csv key)
    with caplog.at_level("INFO", logger="spft.config.loader"):
        cfg = load_config(CLASSIFY, ["data.name=csv", "data.csv=labels.csv", "data.label_columns=[a,b]"])
    assert type(cfg.data).__name__ == "CsvData" and cfg.data.label_columns == ["a", "b"]
    assert cfg.data.image_size == 64  # the file's keys that csv has are kept
    assert any("data.phantom" in r.getMessage() and "data.name=csv" in r.getMessage() for r in caplog.records)
    with pytest.raises(ConfigError, match="'data.phantom.n_images': not a key of data.name=csv"):
        load_config(CLASSIFY, ["data.name=csv", "data.csv=labels.csv", "data.phantom.n_images=5"])


def test_each_dataset_has_its_own_class_with_only_its_keys():
    csv = load_config(CLASSIFY, ["data.name=csv", "data.csv=labels.csv"]).data
    assert type(csv) is get_task("classification").datasets["csv"]
    assert csv.csv == "labels.csv" and not hasattr(csv, "views")
    chexpert = load_config(CLASSIFY, ["data.name=chexpert", "data.root=/x", "data.views=both"]).data
    assert type(chexpert).__name__ == "ChexpertData" and chexpert.views == "both" and not hasattr(chexpert, "csv")
    detect = load_config(DETECT).data
    assert not hasattr(detect, "augment") and not hasattr(detect, "color") and detect.phantom.n_images > 0


def test_a_task_declares_its_sections_and_refuses_no_key_of_theirs_by_name():
    for name in TASKS:
        task = get_task(name)
        assert set(task.sections) <= {"model", "trainer", "detection", "segmentation", "evaluation"}
        assert len(task.not_applicable) <= 3, (name, task.not_applicable)  # shared-section keys only
        for key in task.not_applicable:
            assert key.split(".")[0] in ("loss", "recipe"), key


def test_a_non_applicable_key_in_the_file_is_refused(tmp_path):
    bad = tmp_path / "det.yaml"
    tree = yaml.safe_load(DETECT.read_text())
    tree["trainer"]["progress_bar"] = False
    bad.write_text(yaml.safe_dump(tree))
    with pytest.raises(ConfigError, match=r"det.yaml: 'trainer.progress_bar': not available for detection"):
        load_config(bad)


@pytest.mark.parametrize("config", [DETECT, SEGMENT, CLASSIFY], ids=lambda p: p.stem)
def test_config_yaml_holds_exactly_the_run_schema_and_round_trips(config, tmp_path):
    cfg = load_config(config, ["trainer.max_epochs=3"])
    tree = yaml.safe_load(dump_yaml(cfg))
    schema = schema_for(cfg.task, cfg.data.name)
    assert _leaf_keys(tree, schema) == {k for k in all_keys(schema) if not any(o.startswith(k + ".")
                                                                              for o in all_keys(schema))}
    assert tree["trainer"]["max_epochs"] == 3 and tree["task"] == cfg.task
    again = load_config(None, base=tree)  # what resume / evaluate do with a run's config.yaml
    assert again == cfg


def test_detection_yaml_is_short():
    text = dump_yaml(load_config(DETECT))
    assert "segmentation:" not in text and "evaluation:" not in text and "devices:" not in text
    assert "precision:" not in text and "augment:" not in text and "detection:" in text
    assert "views:" not in text and "csv:" not in text


def _old_full(cfg) -> dict:
    """config.yaml as an spft before the per-engine / per-dataset schema wrote it: every section of every task and
    every dataset key, those of other tasks and datasets at their defaults."""
    tree = to_dict(cfg)
    for name in TASKS:
        for section, cls in get_task(name).sections.items():
            defaults = dataclasses.asdict(cls())
            tree[section] = {**defaults, **tree.get(section, {})} if section in tree else defaults
    for cls in {c for name in TASKS for c in get_task(name).datasets.values()}:
        tree["data"] = {**dataclasses.asdict(cls()), **tree["data"]}
    return tree


@pytest.mark.parametrize("config", [DETECT, SEGMENT, CLASSIFY], ids=lambda p: p.stem)
def test_an_old_run_config_with_every_key_at_its_default_still_loads_saying_so(config, caplog):
    cfg = load_config(config)
    old = _old_full(cfg)
    assert "segmentation" in old and "detection" in old and "devices" in old["trainer"] and "views" in old["data"]
    with caplog.at_level("INFO", logger="spft.config.loader"):
        assert load_config(None, base=old) == cfg
    lines = [r.getMessage() for r in caplog.records if "older spft" in r.getMessage()]
    assert len(lines) == 1 and "data.views" in lines[0], lines
    assert load_config(None, ["trainer.max_epochs=4"], base=old).trainer.max_epochs == 4


def test_an_old_run_config_with_a_non_default_key_of_another_task_is_refused_naming_it():
    old = _old_full(load_config(DETECT))
    old["trainer"]["devices"] = 2
    with pytest.raises(ConfigError, match=r"'trainer.devices': not available for detection \(Ultralytics engine\)"):
        load_config(None, base=old)
    old = _old_full(load_config(DETECT))
    old["segmentation"]["n_overlays"] = 3
    with pytest.raises(ConfigError, match=r"'segmentation.n_overlays': not available for detection"):
        load_config(None, base=old)
    old = _old_full(load_config(CLASSIFY))
    old["data"]["views"] = "both"
    with pytest.raises(ConfigError, match=r"'data.views': not a key of data.name=phantom; it belongs to data.name "
                                          r"chexpert"):
        load_config(None, base=old)


def test_detection_checks_run_at_load_time_with_their_messages():
    with pytest.raises(ConfigError, match=r"'detection.imgsz': expected an integer >= 32, got 16"):
        load_config(DETECT, ["detection.imgsz=16"])
    with pytest.raises(ConfigError, match=r"'data.name': 'phantom' is not a detection dataset \(available for "
                                          r"detection: phantom_detect, vindr_cxr, tbx11k, yolo, coco, csv\)"):
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
    with pytest.raises(ConfigError, match="'data.name': 'phantom' is not a segmentation dataset"):
        load_config(SEGMENT, ["data.name=phantom"])


@pytest.mark.parametrize("config, key, expected", [
    (CLASSIFY, "data.n_images", "data.phantom.n_images"),
    (DETECT, "trainer.imgsz", "detection.imgsz"),
    (CLASSIFY, "optim.lr_haed", "optim.lr_head"),
    (SEGMENT, "structures", "segmentation.structures"),
])
def test_a_misspelt_key_is_matched_at_every_level(config, key, expected):
    with pytest.raises(ConfigError, match=f"unknown config key '{key}' — did you mean '{expected}'"):
        load_config(config, [f"{key}=1"])


def test_every_key_has_a_type_default_and_doc():
    classes = {cls for name in TASKS for cls in [*get_task(name).sections.values(), *get_task(name).datasets.values()]}
    for cls in classes:
        rows = key_docs(cls, "x.")
        undocumented = [r.key for r in rows if not r.doc]
        assert not undocumented, f"add a trailing # comment in src/spft/config/ for {cls.__name__}: {undocumented}"
        assert all(r.type and r.default for r in rows)
    from spft.config.schema import VARIABLE_SECTIONS, SpftConfig

    shared = [r for r in key_docs(SpftConfig) if r.key.split(".")[0] not in VARIABLE_SECTIONS]
    assert shared and all(r.doc for r in shared)


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
    assert "`detection.imgsz`" in out and "`data.name: vindr_cxr`" in out and "`trainer.patience`" in out
    assert "`trainer.devices`" not in out and "`segmentation.structures`" not in out and "data.views" not in out
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


def test_renamed_keys_map_to_one_name_per_concept_saying_so(caplog, tmp_path):
    """segmentation.lr_decoder is optim.lr_head; detection.backbone_lr_ratio r is optim.lr_encoder = r x lr_head —
    in an override, a config file and an old run's config.yaml alike."""
    with caplog.at_level("WARNING", logger="spft.config.loader"):
        seg = load_config(SEGMENT, ["segmentation.lr_decoder=0.002"])
        det = load_config(DETECT, ["optim.lr_head=0.002", "detection.backbone_lr_ratio=0.1"])
    assert seg.optim.lr_head == 0.002 and not hasattr(seg.segmentation, "lr_decoder")
    assert det.optim.lr_encoder == pytest.approx(2e-4) and not hasattr(det.detection, "backbone_lr_ratio")
    lines = [r.getMessage() for r in caplog.records]
    assert any("'segmentation.lr_decoder' is now 'optim.lr_head'" in m for m in lines), lines
    assert any("'detection.backbone_lr_ratio' is now 'optim.lr_encoder'" in m and "= 0.0002" in m for m in lines), lines
    old = to_dict(load_config(DETECT))
    old["detection"]["backbone_lr_ratio"] = None  # written by an older spft at its default: nothing to map
    assert load_config(None, base=old) == load_config(DETECT)
    old["detection"]["backbone_lr_ratio"] = 1.0
    assert load_config(None, base=old).optim.lr_encoder == pytest.approx(load_config(DETECT).optim.lr_head)
    with pytest.raises(ConfigError, match="'detection.backbone_lr_ratio': expected a number >= 0"):
        load_config(DETECT, ["detection.backbone_lr_ratio=-1"])
