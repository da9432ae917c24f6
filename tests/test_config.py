"""Config loading: every file in configs/ validates; overrides are typed; a typo names the key and a fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from spft.config import ConfigError, SpftConfig, load_config, parse_override

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


def test_configs_exist():
    assert any(p.name == "phantom_cxr.yaml" for p in CONFIGS)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_config_loads_and_has_a_header(path):
    cfg = load_config(path)
    assert isinstance(cfg, SpftConfig)
    assert cfg.name == path.stem
    header = path.read_text().splitlines()[:3]
    assert [line.split(":")[0] for line in header] == ["# What", "# Launch", "# Override"], header


def test_overrides_are_typed():
    cfg = load_config(CONFIGS[0], ["optim.lr_head=1e-4", "trainer.max_epochs=3", "recipe.ema.enabled=false",
                                   "data.label_columns=[a, b]", "recipe.unfreeze.top_k=null",
                                   "recipe.class_weights.heuristic={Nodule: 2}"])
    assert cfg.optim.lr_head == pytest.approx(1e-4)
    assert cfg.trainer.max_epochs == 3
    assert cfg.recipe.ema.enabled is False
    assert cfg.data.label_columns == ["a", "b"]
    assert cfg.recipe.unfreeze.top_k is None
    assert cfg.recipe.class_weights.heuristic == {"Nodule": 2.0}


def test_defaults_are_the_papers_recipe():
    cfg = load_config(None, ["model.name=microsoft/rad-dino", "data.csv=x.csv"])
    assert (cfg.optim.lr_encoder, cfg.optim.lr_head, cfg.optim.weight_decay) == (3e-6, 5e-5, 0.05)
    assert (cfg.recipe.stage1_epochs, cfg.recipe.unfreeze.top_k, cfg.recipe.unfreeze.blocks_per_epoch) == (2, 10, 2)
    assert cfg.recipe.ema.decay == 0.999 and cfg.model.head_dropout == 0.2 and cfg.model.head_hidden == 512


@pytest.mark.parametrize("override, expected", [
    ("optim.lr_haed=1e-4", "unknown config key 'optim.lr_haed' — did you mean 'optim.lr_head'?"),
    ("recipe.ema.decy=0.9", "did you mean 'recipe.ema.decay'"),
    ("trainer.max_epoch=3", "did you mean 'trainer.max_epochs'"),
    ("trainer.max_epochs=three", "'trainer.max_epochs': expected an integer, got 'three'"),
    ("recipe.ema.enabled=maybe", "'recipe.ema.enabled': expected true or false"),
    ("loss=focal", "'loss': 'focal' is not one of 'bce', 'ce'"),
    ("data.split_fractions=[0.5, 0.5, 0.5]", "'data.split_fractions'"),
    ("recipe.class_weights.heuristic={Nodule: -1}", "recipe.class_weights.heuristic.Nodule"),
    ("optim.lr_head", "is not of the form KEY=VALUE"),
    ("recipe.class_weights.apply=negative", "'recipe.class_weights.apply': 'negative' is not one of 'both', "
                                            "'positive'"),
    ("optim.schedule=linear", "'optim.schedule': 'linear' is not one of 'cosine', 'constant'"),
])
def test_bad_overrides_name_the_key(override, expected):
    with pytest.raises(ConfigError) as err:
        load_config(CONFIGS[0], [override])
    assert expected in str(err.value)


def test_typo_in_a_file_names_file_and_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: {config: {model_type: dinov2}}\ndata: {name: phantom}\noptim:\n  lr_encodr: 1e-5\n")
    with pytest.raises(ConfigError) as err:
        load_config(bad)
    assert str(bad) in str(err.value) and "'optim.lr_encodr'" in str(err.value) and "optim.lr_encoder" in str(err.value)


def test_missing_file():
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        load_config("nope.yaml")


def test_parse_override_values():
    assert parse_override("a.b=1e-4") == ("a.b", 1e-4)
    assert parse_override("a=[1, 2]") == ("a", [1, 2])
    assert parse_override("a=/data/x") == ("a", "/data/x")
    assert parse_override("a=null") == ("a", None)


def test_class_weights_apply_defaults_to_the_papers_rule_and_takes_positive():
    assert load_config(CONFIGS[0]).recipe.class_weights.apply == "both"
    assert load_config(CONFIGS[0], ["recipe.class_weights.apply=positive"]).recipe.class_weights.apply == "positive"


def test_class_weights_apply_positive_is_refused_where_it_cannot_apply():
    with pytest.raises(ConfigError, match="'recipe.class_weights.apply': 'positive' needs loss: bce"):
        load_config(CONFIGS[0], ["loss=ce", "recipe.class_weights.apply=positive"])
    with pytest.raises(ConfigError, match="'recipe.class_weights.apply': not available for segmentation"):
        load_config(CONFIGS[0].parent / "phantom_segment_sam2.yaml", ["recipe.class_weights.apply=positive"])
