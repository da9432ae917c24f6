"""An ``spft export`` folder read back is untrusted data: its ``config.json`` and the shapes of ``model.safetensors``
are checked before anything is built (issue 20 item 5).

A folder from elsewhere may hold a pickle renamed ``model.safetensors``, a negative ``head_hidden``, a
``model_type`` transformers does not know, a one-value ``mean``, an unknown ``loss`` or a ``hidden_size`` that
would make transformers allocate hundreds of gigabytes. Each is one line naming the file and the key
(:class:`~spft.errors.ConfigError` for ``config.json``, :class:`~spft.errors.CheckpointError` for the weights; exit
2), raised before a tensor is allocated:

* :func:`safetensors_shapes` reads only the safetensors header (8-byte length + JSON) and checks that every entry's
  dtype, shape and byte range fit the file — never the tensors, never a pickle;
* :func:`check_preprocessing` checks the ``spft.preprocessing`` record against what
  :func:`~spft.models.encoders.preprocessing_from_record` needs;
* :func:`encoder_config` checks ``model_type`` and the size keys, :func:`expected_shapes` builds the model on
  PyTorch's ``meta`` device (shapes, no memory) and :func:`compare_shapes` compares them with the header.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from spft.errors import CheckpointError, ConfigError

HEADER_LIMIT = 100 * 2**20  # safetensors' own reader refuses headers over 100 MB
DTYPE_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "U16": 2, "I16": 2, "F16": 2, "BF16": 2,
               "U32": 4, "I32": 4, "F32": 4, "U64": 8, "I64": 8, "F64": 8}
# config keys that size the model: a positive integer each, bounded (a tampered 2**20 hidden_size would be refused
# by the shape comparison anyway, but a million layers would take minutes to build even on the meta device)
SIZE_KEYS = {"hidden_size": 1 << 16, "intermediate_size": 1 << 18, "num_hidden_layers": 1024,
             "num_attention_heads": 1024, "image_size": 1 << 14, "patch_size": 1 << 12, "num_channels": 64,
             "num_register_tokens": 1 << 12, "embed_dim": 1 << 16, "num_layers": 1024, "num_heads": 1024}
MAX_SIDE = 1 << 14  # preprocessing sizes, pixels
RESAMPLE = range(6)  # PIL's filters: NEAREST .. LANCZOS
COLORS = ("grey", "rgb")
LOSSES = ("bce", "ce")


def read_config(folder: Path, task: str) -> tuple[dict, dict]:
    """``(config.json, its spft block)``; one line when it is not JSON, not an object, or not a ``task`` export."""
    path = folder / "config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: not a readable JSON file ({str(exc).splitlines()[0]})") from exc
    if not isinstance(config, dict) or not isinstance(config.get("spft"), dict):
        raise ConfigError(f"{path}: no 'spft' block: not an spft export")
    block = config["spft"]
    if block.get("task") != task:
        raise ConfigError(f"{path}: spft.task is {block.get('task')!r}, not {task!r}")
    return config, block


def positive_int(value, path: Path, key: str, limit: int | None = None, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum or (limit and value > limit):
        bound = f" (at most {limit})" if limit else ""
        what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ConfigError(f"{path}: {key} must be {what}{bound}, got {value!r}")
    return value


def number(value, path: Path, key: str, low: float | None = None, high: float | None = None,
           open_low: bool = False) -> float:
    """A finite number, ``>= low`` (``> low`` with ``open_low``) and ``<= high`` where given."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok and low is not None:
        ok = value > low if open_low else value >= low
    if ok and high is not None:
        ok = value <= high
    if not ok:
        bounds = ([f"{'>' if open_low else '>='} {low:g}"] if low is not None else []) + (
            [f"<= {high:g}"] if high is not None else [])
        raise ConfigError(f"{path}: {key} must be a finite number{' ' + ' and '.join(bounds) if bounds else ''}, "
                          f"got {value!r}")
    return float(value)


def names(value, path: Path, key: str) -> list[str]:
    """A non-empty list of distinct non-empty strings (classes, structures)."""
    if (not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value)
            or len(set(value)) != len(value)):
        raise ConfigError(f"{path}: {key} must be a non-empty list of distinct names, got {value!r}")
    return value


def choice(value, path: Path, key: str, allowed: tuple[str, ...]):
    if value not in allowed:
        raise ConfigError(f"{path}: {key} must be one of {', '.join(allowed)}, got {value!r}")
    return value


def check_preprocessing(record, path: Path, key: str = "spft.preprocessing") -> None:
    """The record :func:`~spft.models.encoders.preprocessing_from_record` reads, checked key by key."""
    if not isinstance(record, dict):
        raise ConfigError(f"{path}: {key} must be an object (the run's preprocessing record), got {record!r}")
    positive_int(record.get("size"), path, f"{key}.size", MAX_SIDE)
    for stat in ("mean", "std"):
        values = record.get(stat)
        if not isinstance(values, list) or len(values) != 3:
            raise ConfigError(f"{path}: {key}.{stat} must be 3 numbers (R, G, B), got {values!r}")
        for v in values:
            number(v, path, f"{key}.{stat}", 0.0 if stat == "std" else None, None, open_low=stat == "std")
    if "resize" in record and record["resize"] is not None:
        resize = record["resize"]
        wanted = ("shortest_edge",) if isinstance(resize, dict) and "shortest_edge" in resize else ("height", "width")
        if not isinstance(resize, dict):
            raise ConfigError(f"{path}: {key}.resize must be null, {{shortest_edge}} or {{height, width}}, "
                              f"got {resize!r}")
        for k in wanted:
            positive_int(resize.get(k), path, f"{key}.resize.{k}", MAX_SIDE)
    if "crop" in record and record["crop"] is not None:
        crop = record["crop"]
        if not isinstance(crop, dict):
            raise ConfigError(f"{path}: {key}.crop must be null or {{height, width}}, got {crop!r}")
        for k in ("height", "width"):
            positive_int(crop.get(k), path, f"{key}.crop.{k}", MAX_SIDE)
    if "resample" in record and record["resample"] not in RESAMPLE:
        raise ConfigError(f"{path}: {key}.resample must be a PIL filter 0-5, got {record['resample']!r}")
    if "rescale" in record and record["rescale"] is not None:
        number(record["rescale"], path, f"{key}.rescale", 0.0, None, open_low=True)


def safetensors_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """``{tensor name: shape}`` from the header of the safetensors file ``path``, checked against the file's size;
    nothing else is read (a pickle or any other file is refused here, never unpickled)."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(8)
            n = int.from_bytes(head, "little") if len(head) == 8 else -1
            if n < 2 or n > min(size - 8, HEADER_LIMIT):
                raise CheckpointError(f"{path}: not a safetensors file (no valid header: {size} bytes, header length "
                                      f"{n if n >= 0 else 'missing'})")
            header = json.loads(fh.read(n).decode("utf-8"))
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot be read ({exc.strerror or exc})") from exc
    except (ValueError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path}: not a safetensors file (its header is not JSON)") from exc
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: not a safetensors file (its header is not a JSON object)")
    data_bytes = size - 8 - n
    shapes = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (start, end) = entry["dtype"], entry["shape"], entry["data_offsets"]
            ok = (dtype in DTYPE_BYTES and isinstance(shape, list)
                  and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
                  and all(isinstance(o, int) and not isinstance(o, bool) for o in (start, end))
                  and 0 <= start <= end <= data_bytes and end - start == math.prod(shape) * DTYPE_BYTES[dtype])
        except (TypeError, KeyError, ValueError):
            ok = False
        if not ok:
            raise CheckpointError(f"{path}: tensor {name!r} has a damaged header entry (dtype, shape or byte range "
                                  f"does not fit the file): {str(entry)[:200]}")
        shapes[name] = tuple(shape)
    return shapes


def encoder_config(config: dict, path: Path, model_types: tuple[str, ...] | None = None):
    """The transformers config of ``config.json`` (without the ``spft`` block), checked: ``model_type`` known to
    transformers (and one of ``model_types`` when given), the size keys positive and bounded."""
    from transformers import CONFIG_MAPPING

    model_type = config.get("model_type")
    if not isinstance(model_type, str) or model_type not in CONFIG_MAPPING or (
            model_types and model_type not in model_types):
        known = ", ".join(model_types) if model_types else "a transformers model type"
        raise ConfigError(f"{path}: model_type {model_type!r} is not {known} (an spft export names its encoder's "
                          "model_type)")
    _check_sizes(config, path, "")
    data = {k: v for k, v in config.items() if k != "spft"}
    try:
        return CONFIG_MAPPING[model_type].from_dict(data)
    except Exception as exc:  # noqa: BLE001 - any value transformers' config class refuses: one line naming the file
        raise ConfigError(f"{path}: not a valid {model_type} config: {str(exc).splitlines()[0] if str(exc) else ''}"
                          ) from exc


def _check_sizes(config: dict, path: Path, prefix: str) -> None:
    for key, value in config.items():
        if key == "spft":
            continue
        if isinstance(value, dict):  # nested configs (SAM2's vision_config, backbone_config ...)
            _check_sizes(value, path, f"{prefix}{key}.")
        elif key in SIZE_KEYS and value is not None and not isinstance(value, list):
            positive_int(value, path, f"{prefix}{key}", SIZE_KEYS[key])


def expected_shapes(build, path: Path) -> dict[str, tuple[int, ...]]:
    """``{key: shape}`` of the state dict of ``build()`` made on the meta device (no memory is allocated)."""
    import torch

    try:
        with torch.device("meta"):
            model = build()
    except ConfigError:
        raise
    except Exception as exc:  # noqa: BLE001 - a config transformers cannot build: one line naming the file
        raise ConfigError(f"{path}: describes no model transformers can build: "
                          f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from exc
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def compare_shapes(found: dict[str, tuple[int, ...]], expected: dict[str, tuple[int, ...]], weights: Path,
                   config: Path, optional: tuple[str, ...] = ()) -> None:
    """One line for the first tensor missing, unexpected or of another shape than ``config`` describes.
    ``optional``: key prefixes the weights may leave out (buffers a model re-creates)."""
    missing = [k for k in expected if k not in found and not k.startswith(optional)]
    if missing:
        raise CheckpointError(f"{weights}: no tensor {missing[0]!r} ({len(missing)} missing), which {config} "
                              "describes: the weights do not belong to this config")
    extra = [k for k in found if k not in expected]
    if extra:
        raise CheckpointError(f"{weights}: tensor {extra[0]!r} ({len(extra)} unexpected) is not part of the model "
                              f"{config} describes")
    for key, shape in found.items():
        if tuple(expected[key]) != tuple(shape):
            raise CheckpointError(f"{weights}: tensor {key!r} has shape {list(shape)}, {config} describes "
                                  f"{list(expected[key])}")
