"""Every private API spft reaches into (:mod:`spft.compat`), one test each: an upgrade that removes, renames or
changes one fails here, with a message naming the touchpoint, instead of somewhere inside a training run."""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import re
from pathlib import Path

import pytest
import torch
from torch import nn

from spft import compat

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def _project() -> dict:
    tomllib = pytest.importorskip("tomllib")  # stdlib from Python 3.11; spft supports 3.10, which has no TOML reader
    return tomllib.loads(PYPROJECT.read_text())["project"]


def _why(touchpoint: str) -> str:
    lib = touchpoint.split(":")[0]
    versions = compat.installed_versions()
    return (f"{touchpoint} changed (installed {lib} {versions.get(lib)}, spft.compat was checked against "
            f"{compat.CHECKED_AGAINST.get(lib)}): update spft/compat.py")


# --- versions -------------------------------------------------------------------------------------------------------

def test_installed_versions_are_within_pyproject_bounds():
    """The caps in pyproject.toml are what keeps these tests meaningful: the installed libraries must satisfy them."""
    from importlib.metadata import PackageNotFoundError, version

    from packaging.requirements import Requirement

    project = _project()
    reqs = list(project["dependencies"]) + [r for extra in project["optional-dependencies"].values() for r in extra]
    outside = []
    for text in reqs:
        req = Requirement(text)
        try:
            installed = version(req.name)
        except PackageNotFoundError:
            continue
        if req.specifier and not req.specifier.contains(installed, prereleases=True):
            outside.append(f"{req.name} {installed} (pyproject: {req.specifier})")
    assert not outside, "installed outside pyproject's bounds: " + "; ".join(outside)


def test_capped_libraries_are_the_ones_compat_reaches_into():
    project = _project()
    reqs = list(project["dependencies"]) + [r for extra in project["optional-dependencies"].values() for r in extra]
    capped = {re.split(r"[<>=!~\[ ]", r, maxsplit=1)[0] for r in reqs if "<" in r}
    reached = set(compat.CHECKED_AGAINST) - {"python"}
    assert reached <= capped, f"no major-version cap in pyproject.toml for {sorted(reached - capped)}"


# --- torch ----------------------------------------------------------------------------------------------------------

def test_torch_flatten_unflatten_dense_tensors():
    tensors = [torch.arange(3.0), torch.ones(2, 2)]
    flat = compat.flatten_dense_tensors(tensors)
    assert flat.shape == (7,), _why("torch:torch._utils._flatten_dense_tensors")
    back = compat.unflatten_dense_tensors(flat * 2, tensors)
    assert [t.shape for t in back] == [(3,), (2, 2)], _why("torch:torch._utils._unflatten_dense_tensors")
    assert torch.equal(back[0], torch.arange(3.0) * 2) and torch.equal(back[1], torch.full((2, 2), 2.0))


def test_torch_group_tensors_by_device_and_dtype():
    a32, b32, a64 = torch.zeros(2), torch.zeros(3), torch.zeros(2, dtype=torch.float64)
    m32, n32, m64 = torch.ones(2), torch.ones(3), torch.ones(2, dtype=torch.float64)
    grouped = compat.group_tensors_by_device_and_dtype([[a32, b32, a64], [m32, n32, m64]])
    why = _why("torch:torch.utils._foreach_utils._group_tensors_by_device_and_dtype")
    assert isinstance(grouped, dict) and len(grouped) == 2, why
    for (firsts, seconds), _ in grouped.values():  # the layout EmaModel unpacks
        assert len(firsts) == len(seconds), why
    (firsts, seconds), _ = grouped[(torch.device("cpu"), torch.float32)]
    assert firsts[0] is a32 and seconds[1] is n32 and len(firsts) == 2, why  # the same tensors, not copies


def test_torch_foreach_lerp_():
    ema, model = [torch.zeros(2), torch.zeros(3)], [torch.ones(2), torch.full((3,), 2.0)]
    compat.foreach_lerp_(ema, model, 0.25)
    assert torch.allclose(ema[0], torch.full((2,), 0.25)) and torch.allclose(ema[1], torch.full((3,), 0.5)), \
        _why("torch:torch._foreach_lerp_")


def test_torch_dynamo_recompile_limit():
    name, value = compat.dynamo_recompile_limit()
    assert name in ("recompile_limit", "cache_size_limit") and value > 0, _why("torch:torch._dynamo.config")
    try:
        compat.set_dynamo_recompile_limit(value + 1)
        assert compat.dynamo_recompile_limit() == (name, value + 1), _why("torch:torch._dynamo.config")
    finally:
        compat.set_dynamo_recompile_limit(value)


def test_torch_compiled_call_impl_marks_an_in_place_compile():
    layer = nn.Linear(2, 2)
    assert not compat.is_compiled_in_place(layer)
    layer.compile()  # lazy: nothing is compiled until the first call
    assert compat.is_compiled_in_place(layer), _why("torch:nn.Module._compiled_call_impl")


def test_torch_batch_norm_base():
    base = compat.batch_norm_base()
    assert all(issubclass(c, base) for c in (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)), \
        _why("torch:torch.nn.modules.batchnorm._BatchNorm")
    assert not issubclass(nn.InstanceNorm2d, base) and not issubclass(nn.LayerNorm, base)


def test_torch_load_from_state_dict_override_runs():
    """EmaModel re-reads its update counter when a state dict is loaded (its _load_from_state_dict override)."""
    from spft.recipe.ema import EmaModel

    ema = EmaModel(nn.Linear(2, 2))
    ema.update_parameters(ema.module)
    assert ema._count == 1
    ema.load_state_dict(EmaModel(nn.Linear(2, 2)).state_dict())
    assert ema._count is None, _why("torch:nn.Module._load_from_state_dict")


# --- transformers ---------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_vit():
    import transformers  # a core dependency: never skipped
    cfg = transformers.Dinov2Config(hidden_size=8, num_hidden_layers=1, num_attention_heads=2, mlp_ratio=2,
                                    patch_size=8, image_size=16)
    return transformers.AutoModel.from_config(cfg, attn_implementation="eager")


def test_transformers_attn_implementation(tiny_vit):
    assert compat.attn_implementation(tiny_vit.config) == "eager", \
        _why("transformers:PretrainedConfig._attn_implementation")
    tiny_vit.set_attn_implementation("sdpa")
    try:
        assert compat.attn_implementation(tiny_vit.config) == "sdpa", \
            _why("transformers:PretrainedConfig._attn_implementation")
    finally:
        tiny_vit.set_attn_implementation("eager")
    assert compat.attn_implementation(None) is None


def test_transformers_attention_function_names():
    import transformers  # noqa: F401 - a core dependency: never skipped
    names = compat.attention_function_names()
    assert names is not None and "sdpa" in names, \
        _why("transformers:transformers.modeling_utils.ALL_ATTENTION_FUNCTIONS")


def test_transformers_layer_checkpointing_function_is_called(tiny_vit):
    layer_class = compat.gradient_checkpointing_layer_class()
    assert layer_class is not None, _why("transformers:transformers.modeling_layers.GradientCheckpointingLayer")
    layers = [m for m in tiny_vit.modules() if isinstance(m, layer_class)]
    assert layers, _why("transformers:GradientCheckpointingLayer (Dinov2's blocks no longer derive from it)")
    calls = []

    def recorder(function, *args, **kwargs):
        calls.append(function)
        return function(*args, **kwargs)

    try:
        for layer in layers:
            compat.enable_layer_checkpointing(layer, recorder)
        tiny_vit.train()
        tiny_vit(pixel_values=torch.randn(1, 3, 16, 16, requires_grad=True))
    finally:
        for layer in layers:
            layer.gradient_checkpointing = False
        tiny_vit.eval()
    assert len(calls) == len(layers), _why("transformers:GradientCheckpointingLayer._gradient_checkpointing_func")


# --- Lightning ------------------------------------------------------------------------------------------------------

def test_lightning_model_checkpoint_last_saved(tmp_path):
    from lightning.pytorch.callbacks import ModelCheckpoint

    cb = ModelCheckpoint(dirpath=tmp_path)
    assert compat.checkpoint_last_saved(cb) == (0, ""), \
        _why("lightning:ModelCheckpoint._last_global_step_saved/_last_checkpoint_saved")
    compat.record_checkpoint_saved(cb, 7, str(tmp_path / "x.ckpt"))
    assert compat.checkpoint_last_saved(cb) == (7, str(tmp_path / "x.ckpt"))
    source = inspect.getsource(ModelCheckpoint)
    assert "self._last_global_step_saved == trainer.global_step" in source, \
        _why("lightning:ModelCheckpoint._last_global_step_saved (no longer what skips a second save of a step)")


def test_lightning_csv_logger_private_fields(tmp_path):
    from lightning.pytorch.loggers import CSVLogger
    from lightning.pytorch.loggers.csv_logs import ExperimentWriter

    logger = CSVLogger(tmp_path, name="logs", version="")
    assert compat.csv_logger_experiment(logger) is None, _why("lightning:CSVLogger._experiment")
    fs = compat.logger_filesystem(logger)
    assert all(callable(getattr(fs, m, None)) for m in ("isfile", "makedirs", "open")), _why("lightning:CSVLogger._fs")
    writer = ExperimentWriter(str(tmp_path / "w"))
    assert compat.logger_filesystem(writer).isdir(str(tmp_path / "w")), _why("lightning:ExperimentWriter._fs")
    assert hasattr(writer, "metrics_file_path") and hasattr(writer, "metrics_keys")


def test_lightning_resumable_csv_logger_keeps_rows(tmp_path):
    """The overridden ``experiment`` property and ``_check_log_dir_exists``: an existing metrics.csv survives."""
    from spft.tasks.lightning.trainer import ResumableCSVLogger, _KeepingWriter

    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "metrics.csv").write_bytes(b"epoch,loss\r\n0,1.0\r\n")
    logger = ResumableCSVLogger(tmp_path, name="logs", version="")
    writer = logger.experiment
    assert isinstance(writer, _KeepingWriter) and compat.csv_logger_experiment(logger) is writer, \
        _why("lightning:CSVLogger._experiment")
    assert (logs / "metrics.csv").read_bytes() == b"epoch,loss\r\n0,1.0\r\n", \
        _why("lightning:_ExperimentWriter._check_log_dir_exists (metrics.csv was deleted)")
    assert writer.metrics_keys == ["epoch", "loss"]


# --- Ultralytics ----------------------------------------------------------------------------------------------------

def test_ultralytics_image_open_patch():
    import ultralytics  # noqa: F401 - make test installs every extra: a missing one fails, never skips
    import ultralytics.utils.patches  # noqa: F401 - patches PIL.Image.open
    from PIL import Image

    from spft.tasks.detection import restore_pil_open

    pair = compat.ultralytics_image_open()
    why = _why("ultralytics:ultralytics.utils.patches.image_open/_image_open")
    assert pair is not None, why
    if pair == (None, None) and Image.open.__module__ == "PIL.Image":
        return  # an Ultralytics that no longer patches PIL: nothing to restore
    assert callable(pair[0]) and callable(pair[1]), why
    wrapper, original = pair
    assert original.__module__ == "PIL.Image" and original.__name__ == "open", why
    restore_pil_open()
    assert Image.open is original, why


def test_ultralytics_trainer_internals_spft_relies_on():
    """Unprefixed but undocumented: the trainer attributes and group key the SPFT trainer sets or reads."""
    import ultralytics  # noqa: F401 - make test installs every extra: a missing one fails, never skips
    from ultralytics.engine import trainer as trainer_module
    from ultralytics.engine.trainer import BaseTrainer
    from ultralytics.models.yolo.detect import DetectionTrainer
    from ultralytics.utils.torch_utils import ModelEMA

    why = _why("ultralytics:BaseTrainer internals")
    source = inspect.getsource(trainer_module)
    for needle in ("self.lf(", 'x.get("param_group")', "self.freeze_layer_names", "self.ema.update("):
        assert needle in source, f"{why}: {needle!r} not in ultralytics/engine/trainer.py"
    params = list(inspect.signature(BaseTrainer.build_optimizer).parameters)
    assert params == ["self", "model", "name", "lr", "momentum", "decay", "iterations"], f"{why}: {params}"
    for name, args in (("save_model", []), ("save_metrics", ["metrics"]), ("validate", []),
                       ("set_class_weights", []), ("get_class_counts", [])):
        method = getattr(DetectionTrainer, name, None)
        assert callable(method), f"{why}: DetectionTrainer.{name} is gone"
        assert list(inspect.signature(method).parameters)[1:] == args, f"{why}: DetectionTrainer.{name} changed"
    model = nn.Sequential(nn.Linear(2, 2))
    ema = ModelEMA(model)
    assert callable(ema.decay), f"{why}: ModelEMA.decay is no longer a function of the update count"
    ema.decay = lambda updates: 0.0  # RecipeEmaDecay's contract: EMA = raw weights at decay 0
    with torch.no_grad():
        model[0].weight.add_(1.0)
    ema.update(model)
    assert torch.equal(ema.ema[0].weight, model[0].weight), f"{why}: ModelEMA.update ignores ModelEMA.decay"


def test_ultralytics_validator_iou_vector():
    import ultralytics  # noqa: F401 - make test installs every extra: a missing one fails, never skips
    from ultralytics.models.yolo.detect import DetectionValidator

    source = inspect.getsource(DetectionValidator)
    assert "self.iouv" in source and "self.niou" in source, \
        _why("ultralytics:DetectionValidator.iouv/niou (spft's mAP@40 validator sets them)")


# --- overrides of private methods -----------------------------------------------------------------------------------

@pytest.mark.parametrize("override", compat.PRIVATE_OVERRIDES, ids=lambda o: f"{o.library}:{o.method}")
def test_private_override_still_matches_its_base(override):
    importlib.import_module(override.library)  # installed by make test: a missing library fails, never skips
    problems = compat.check_override(override)
    assert not problems, (f"{_why(override.library + ':' + override.name)} — {override.why}:\n  "
                          + "\n  ".join(problems))


def test_check_override_reports_a_renamed_method():
    fake = compat.PrivateOverride("torch", "torch.nn:Module", "_no_such_method", (), "spft.recipe.ema:EmaModel",
                                  "torch.nn.modules.module", "a test")
    assert compat.check_override(fake) == ["torch.nn.Module._no_such_method is gone (spft overrides it: a test)"]
    changed = compat.PrivateOverride("torch", "torch.nn:Module", "_load_from_state_dict", ("state_dict",),
                                     "spft.recipe.ema:EmaModel", "torch.nn.modules.module", "a test")
    assert "now takes" in compat.check_override(changed)[0]


# --- submitit -------------------------------------------------------------------------------------------------------

def test_submitit_local_controller_module():
    import submitit  # noqa: F401 - make test installs every extra: a missing one fails, never skips
    from submitit.local import local

    why = _why("submitit:" + compat.SUBMITIT_LOCAL_CONTROLLER)
    assert importlib.util.find_spec(compat.SUBMITIT_LOCAL_CONTROLLER) is not None, why
    assert f'"{compat.SUBMITIT_LOCAL_CONTROLLER}"' in inspect.getsource(local), \
        f"{why}: LocalExecutor no longer starts its controller as this module"


def test_submitit_submission_script(tmp_path, monkeypatch):
    import submitit  # make test installs every extra: a missing one fails, never skips
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{__import__('os').environ['PATH']}")
    executor = submitit.SlurmExecutor(tmp_path / "jobs")
    executor.update_parameters(time=5, job_name="compat")
    script = compat.submission_script(executor)
    why = _why("submitit:Executor._make_submission_file_text/_submitit_command_str")
    assert script.startswith("#!/bin/bash") and "#SBATCH --job-name=compat" in script, why
    assert "submitit.core._submit" in script, why


# --- Python's argparse ----------------------------------------------------------------------------------------------

def test_argparse_subparsers_and_option_strings():
    parser = argparse.ArgumentParser()
    parser.add_argument("--top")
    sub = parser.add_subparsers()
    child = sub.add_parser("child")
    child.add_argument("-v")
    actions = compat.subparser_actions(parser)
    why = _why("python:argparse._actions/_SubParsersAction/_option_string_actions")
    assert len(actions) == 1 and actions[0].choices["child"] is child, why
    assert compat.subparser_actions(child) == [], why
    assert compat.has_option_string(child, "-v") and compat.has_option_string(parser, "--top"), why
    assert not compat.has_option_string(parser, "-v"), why
