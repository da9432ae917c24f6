"""``spft predict`` on a tiny SAM2 segmentation run (96 px phantoms, 64 px model, trained once for the module).

What is checked: with the boxes evaluation derives from the test masks (scaled to the image's pixels), predict gives
the evaluation path's model input, logits and masks (the PNGs ``evaluate_module`` writes); through the CLI, masks
(PNG + row-major CheXmask RLE) for every prompted image, missing / undecodable / unprompted inputs listed with exit
1, a one-line refusal without prompts; prompts tables: the most confident detection per structure, duplicates and
unknown structures refused.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import run_cli
from PIL import Image
from segmentation_fixtures import TINY_SAM2

from spft.data.mask_contract import decode_chexmask_rle
from spft.errors import DataError
from spft.tasks.segmentation.predict import prompts_from_table

STRUCTURES = ["heart", "left_lung", "right_lung"]


@pytest.fixture(scope="module")
def run(spft_cache, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("predict_seg") / "run"
    run_cli("train", "configs/phantom_segment_sam2.yaml", TINY_SAM2, "data.phantom.n_images=40",
            "data.phantom.image_size=96", "data.num_workers=0", "trainer.max_epochs=2", "trainer.batch_size=8",
            "trainer.progress_bar=false", "recipe.stage1_epochs=1", "optim.warmup_steps=0",
            "segmentation.n_overlays=0", f"run.dir={run_dir}")
    return run_dir


@pytest.fixture(scope="module")
def evaluated(run, tmp_path_factory):
    """The evaluation path on the test split: dataset, module (best EMA weights), the masks it writes, and prompts
    (the dataset's input-pixel boxes scaled to the image's pixels)."""
    from spft.data.masks import load_mask_table
    from spft.experiments.rundir import load_run_config
    from spft.tasks.lightning.trainer import load_checkpoint_into
    from spft.tasks.segmentation.evaluate import eval_loader, evaluate_module
    from spft.tasks.segmentation.train import build_run

    cfg = load_run_config(run)
    table = load_mask_table(cfg.data, STRUCTURES, cfg.seed)
    _, prep, module, dm = build_run(cfg, None, table=table)
    load_checkpoint_into(module, run / "checkpoints" / "best.ckpt")
    dataset = dm.datasets["test"]
    out = tmp_path_factory.mktemp("eval_masks")
    evaluate_module(module, eval_loader(dataset, 8), "test", "cpu", out_dir=out, n_overlays=len(dataset))
    rows = []
    for i in range(len(dataset)):
        sample = dataset[i]
        width, height = dataset.original(i)[0].size
        scale = np.array([width / prep.size, height / prep.size] * 2)
        for s, box in zip(STRUCTURES, sample["boxes"].double().numpy() * scale):
            rows.append({"id": table.paths[int(dataset.index[i])], "structure": s, **dict(zip(("x1", "y1", "x2", "y2"),
                                                                                            box))})
    return dataset, module, out, pd.DataFrame(rows)


@pytest.mark.slow
def test_masks_equal_the_evaluation_path(run, evaluated):
    from spft.tasks.segmentation.predict import load

    dataset, module, eval_dir, prompts = evaluated
    seg = load(run, device="cpu")
    assert seg.weights_kind == "ema"
    paths = [dataset.table.paths[int(r)] for r in dataset.index]
    batch = [dataset[i] for i in range(len(dataset))]
    pixels = torch.stack([seg.model_input(p)[0] for p in paths])
    assert torch.equal(pixels, torch.stack([b["image"] for b in batch]))
    boxes = torch.stack([seg.model_boxes(prompts[prompts["id"] == p][["x1", "y1", "x2", "y2"]].to_numpy(),
                                         seg.model_input(p)[1]) for p in paths])
    assert torch.equal(boxes, torch.stack([b["boxes"] for b in batch]))
    with torch.no_grad():
        expected = module.eval_model().eval()(pixels, boxes)
    torch.testing.assert_close(seg.logits(pixels, boxes), expected, rtol=1e-5, atol=1e-5)

    table = seg.predict(paths, prompts=prompts, batch_size=8, workers=1)
    assert table.attrs["failed"] == [] and len(table) == len(paths) * len(STRUCTURES)
    for row in table.to_dict("records"):
        i = paths.index(row["id"])
        mine = decode_chexmask_rle(row["rle"], row["height"], row["width"]).astype(bool)
        theirs = np.asarray(Image.open(eval_dir / f"{dataset.table.ids[int(dataset.index[i])]}_{row['structure']}.png"))
        assert mine.shape == (96, 96) and np.array_equal(mine, theirs > 0), (row["id"], row["structure"])


@pytest.mark.slow
def test_cli_masks_failures_and_refusal(run, evaluated, tmp_path):
    _, _, _, prompts = evaluated
    prompts_csv = tmp_path / "boxes.csv"
    prompts.to_csv(prompts_csv, index=False)
    paths = list(dict.fromkeys(prompts["id"]))
    refused = run_cli("predict", str(run), *paths, check=False)
    assert refused.returncode != 0 and "needs box prompts" in refused.stderr
    assert len([line for line in refused.stderr.splitlines() if line.strip()]) == 1

    unprompted = tmp_path / "unprompted.png"
    Image.open(paths[0]).save(unprompted)
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    out = tmp_path / "masks.csv"
    proc = run_cli("predict", str(run), *paths, str(unprompted), str(corrupt), str(tmp_path / "missing.png"),
                   "--prompts", str(prompts_csv), "--out", str(out), "--device", "cpu", check=False)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == str(out)
    failed = pd.read_csv(tmp_path / "masks.failed.csv")
    assert sorted(failed["path"]) == sorted(map(str, (unprompted, corrupt, tmp_path / "missing.png")))
    table = pd.read_csv(out, keep_default_na=False)
    assert list(table.columns) == ["id", "structure", "rle", "height", "width", "mask_file"]
    assert len(table) == len(paths) * len(STRUCTURES) and set(table["structure"]) == set(STRUCTURES)
    for row in table.to_dict("records"):
        png = np.asarray(Image.open(tmp_path / row["mask_file"])) > 0
        assert np.array_equal(png, decode_chexmask_rle(row["rle"], row["height"], row["width"]).astype(bool))


def test_prompts_tables():
    detections = pd.DataFrame({"id": ["a.png"] * 3 + ["b.png"], "class": ["heart", "heart", "Mass", "left_lung"],
                               "confidence": [0.2, 0.9, 0.99, 0.5], "x1": [1, 2, 3, 4], "y1": [1, 2, 3, 4],
                               "x2": [5, 6, 7, 8], "y2": [5, 6, 7, 8]})
    prompts = prompts_from_table(detections, STRUCTURES, "det.csv", None)
    assert prompts["a.png"] == {"heart": (2.0, 2.0, 6.0, 6.0)} and prompts["b.png"] == {"left_lung": (4, 4, 8, 8)}
    boxes = pd.DataFrame({"path": ["a.png", "a.png"], "structure": ["heart", "heart"], "x1": [1, 1], "y1": [1, 1],
                          "x2": [2, 2], "y2": [2, 2]})
    with pytest.raises(DataError, match="second box"):
        prompts_from_table(boxes, STRUCTURES, "boxes.csv", None)
    with pytest.raises(DataError, match="not the run's"):
        prompts_from_table(boxes.assign(structure=["heart", "liver"]), STRUCTURES, "boxes.csv", None)
    with pytest.raises(DataError, match="x2 < x1"):
        prompts_from_table(boxes.iloc[:1].assign(x2=0), STRUCTURES, "boxes.csv", None)


@pytest.fixture(scope="module")
def exported(run, tmp_path_factory):
    from spft.tasks.registry import predict_api

    return predict_api("segmentation").export(run, tmp_path_factory.mktemp("seg_export") / "export")


@pytest.mark.slow
def test_export_loads_in_transformers_and_predicts_identically(run, evaluated, exported, tmp_path):
    """The export folder: transformers' Sam2Model / AutoModel load the run's EMA weights exactly; `spft predict` from
    it writes the masks predicting from the run writes; --format onnx is one line."""
    import json

    from transformers import AutoImageProcessor, AutoModel, Sam2Model

    from spft.tasks.segmentation.predict import load

    for name in ("model.safetensors", "config.json", "preprocessor_config.json", "MODEL_CARD.md", "export.json"):
        assert (exported / name).is_file(), name
    block = json.loads((exported / "config.json").read_text())["spft"]
    assert block["task"] == "segmentation" and block["structures"] == STRUCTURES and block["image_size"] == 64
    assert type(AutoImageProcessor.from_pretrained(str(exported))).__name__.startswith("Sam2ImageProcessor")
    ema = load(run, device="cpu").model.sam.state_dict()
    for loader in (Sam2Model, AutoModel):
        sd = loader.from_pretrained(str(exported)).state_dict()
        assert sd.keys() == ema.keys()
        assert all(torch.equal(sd[k], ema[k]) for k in ema), loader

    _, _, _, prompts = evaluated
    prompts_csv = tmp_path / "boxes.csv"
    prompts.to_csv(prompts_csv, index=False)
    paths = list(dict.fromkeys(prompts["id"]))
    tables = []
    for source in (run, exported):
        out = tmp_path / f"{source.name}.csv"
        run_cli("predict", str(source), *paths, "--prompts", str(prompts_csv), "--out", str(out), "--device", "cpu")
        tables.append(pd.read_csv(out, keep_default_na=False).drop(columns="mask_file"))
    pd.testing.assert_frame_equal(tables[0], tables[1])
    refused = run_cli("export", str(run), "--out", str(tmp_path / "onnx"), "--format", "onnx", check=False)
    assert refused.returncode == 2 and "spft has no verified ONNX export of SAM2" in refused.stderr
    assert len([line for line in refused.stderr.splitlines() if line.strip()]) == 1
