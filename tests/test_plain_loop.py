"""spft's training core equals a plain PyTorch loop when every recipe switch is off.

``spft train`` runs through the real CLI with no stage 1 (``recipe.stage1_epochs=0``), every block and the
embeddings open from the first step, no class weights, no EMA, a constant learning rate (``optim.schedule=constant``,
no warm-up), no augmentation and ``data.num_workers=0``. The loop below does the same by hand with torch and
transformers alone: a Dinov2Model and the paper's MLP head, loaded with the run's initial weights (saved by the
``run_hooks:SaveInitialWeights`` callback, loaded strictly: same architecture, same parameter names), images read
with PIL and normalised with RAD-DINO's statistics, AdamW with the encoder and head learning rates and weight decay
on every matrix except the embedding tokens and positions, BCE summed over classes and averaged over the batch,
and spft's data order and dropout noise: the permutation of epoch e from a generator seeded ``seed * 100003 + e``
(:class:`spft.data.dataset.EpochSeededSampler`) and torch's global generator reseeded ``seed * 1000003 + e`` at each
epoch's first batch (:class:`spft.tasks.lightning.callbacks.EpochReseed`). The per-epoch mean training loss of
``history.csv`` must equal the loop's within ``RTOL``.

The loop then runs again with one thing changed at a time — the encoder at the head's learning rate, weight decay on
every parameter, no weight decay, no dropout reseeding — and each variant must miss spft's losses by far more than
``RTOL``: a change of that kind in spft would fail this test. Differences between spft and a plain loop that could
not be removed are listed in docs/deviations.md ("spft against a plain loop").
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from conftest import run_cli
from PIL import Image
from run_hooks import TESTS
from torch import nn

pytestmark = pytest.mark.slow

SEED = 0
CLASSES = ["A", "B", "C"]
N = {"train": 96, "val": 32, "test": 32}
SIZE = 32
EPOCHS = 4
BATCH = 16
LR_ENCODER, LR_HEAD, WEIGHT_DECAY = 2e-3, 5e-3, 0.5
HIDDEN, DROPOUT = 32, 0.2
ENCODER = {"model_type": "dinov2", "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
           "mlp_ratio": 2, "patch_size": 8, "image_size": SIZE}
MEAN, STD = 0.5307, 0.2583  # RAD-DINO's statistics: spft's preprocessing for an encoder built from a config
RTOL = 1e-4


def _write_data(root: Path) -> Path:
    """Grey 32 px images: noise, plus a bright square in class k's own corner when the image has finding k."""
    rng = np.random.default_rng(7)
    prevalence = (0.25, 0.4, 0.55)
    corners = ((2, 2), (2, 20), (20, 11))
    rows = []
    for split, n in N.items():
        for i in range(n):
            pixels = rng.normal(100, 25, (SIZE, SIZE))
            labels = [int(rng.random() < p) for p in prevalence]
            for on, (r, c) in zip(labels, corners):
                if on:
                    pixels[r:r + 9, c:c + 9] += 90
            name = f"{split}_{i:03d}.png"
            Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), mode="L").save(root / name)
            rows.append({"image": name, "split": split, **dict(zip(CLASSES, labels))})
    table = root / "labels.csv"
    with open(table, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["image", "split", *CLASSES])
        writer.writeheader()
        writer.writerows(rows)
    return table


def _config(table: Path, run_dir: Path) -> dict:
    return {
        "task": "classification", "seed": SEED, "loss": "bce", "run": {"dir": str(run_dir)},
        "data": {"name": "csv", "csv": str(table), "label_columns": CLASSES, "split_column": "split",
                 "image_size": SIZE, "color": "grey", "num_workers": 0, "augment": {"enabled": False}},
        "model": {"config": ENCODER, "pooling": "mean", "head_hidden": HIDDEN, "head_dropout": DROPOUT},
        "recipe": {"stage1_epochs": 0,
                   "unfreeze": {"enabled": True, "top_k": None, "blocks_per_epoch": ENCODER["num_hidden_layers"],
                                "embeddings": True},
                   "class_weights": {"enabled": False, "refine": False},
                   "ema": {"enabled": False}},
        "optim": {"lr_encoder": LR_ENCODER, "lr_head": LR_HEAD, "weight_decay": WEIGHT_DECAY,
                  "schedule": "constant", "warmup_steps": 0},
        "trainer": {"max_epochs": EPOCHS, "batch_size": BATCH, "accelerator": "cpu", "precision": "32-true",
                    "patience": 100, "progress_bar": False, "feature_cache": False},
    }


@pytest.fixture(scope="module")
def spft_run(spft_cache, tmp_path_factory):
    """One ``spft train`` with every recipe switch off: (run dir, initial weights, data table)."""
    root = tmp_path_factory.mktemp("plain_loop")
    (root / "data").mkdir()
    table = _write_data(root / "data")
    config = root / "plain.yaml"
    config.write_text(yaml.safe_dump(_config(table, root / "run")))
    init = root / "init.pt"
    env = {"PYTHONPATH": f"{TESTS}:{__import__('os').environ.get('PYTHONPATH', '')}".rstrip(":"),
           "SPFT_TEST_CALLBACK": "run_hooks:SaveInitialWeights", "SPFT_INIT_WEIGHTS": str(init)}
    run_cli("train", str(config), env=env)
    return root / "run", torch.load(init, weights_only=True), table


# ---- the plain loop -------------------------------------------------------------------------------------------

class PlainClassifier(nn.Module):
    """Dinov2 → mean of the patch tokens → LayerNorm → Linear → GELU → Dropout → Linear → GELU → Dropout → Linear,
    with spft's attribute names so that the run's initial weights load strictly."""

    def __init__(self):
        super().__init__()
        from transformers import Dinov2Config, Dinov2Model

        config = Dinov2Config(**{k: v for k, v in ENCODER.items() if k != "model_type"})
        config._attn_implementation = "sdpa"  # spft's model.attn_implementation default
        self.encoder = Dinov2Model(config)
        head = nn.Sequential(nn.LayerNorm(ENCODER["hidden_size"]), nn.Linear(ENCODER["hidden_size"], HIDDEN),
                             nn.GELU(), nn.Dropout(DROPOUT), nn.Linear(HIDDEN, HIDDEN), nn.GELU(),
                             nn.Dropout(DROPOUT), nn.Linear(HIDDEN, len(CLASSES)))
        self.head = nn.Module()
        self.head.net = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.encoder(pixel_values=x).last_hidden_state
        return self.head.net(tokens[:, 1:].mean(dim=1))


def _train_split(table: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """The training images (CSV order) as RAD-DINO-normalised 3-channel tensors, and their labels."""
    with open(table) as fh:
        rows = [r for r in csv.DictReader(fh) if r["split"] == "train"]
    images = []
    for r in rows:
        grey = np.asarray(Image.open(table.parent / r["image"]).convert("L"), dtype=np.float64) / 255.0
        x = (torch.from_numpy(grey.astype(np.float32)) - MEAN) / STD
        images.append(x.expand(3, -1, -1))
    labels = torch.tensor([[float(r[c]) for c in CLASSES] for r in rows])
    return torch.stack(images), labels


def _no_decay(name: str, p: torch.Tensor) -> bool:
    return p.ndim <= 1 or name.endswith("bias") or "token" in name or "position" in name


def plain_loop(init: dict, table: Path, lr_encoder: float = LR_ENCODER, lr_head: float = LR_HEAD,
               decay: str = "matrices", reseed: bool = True) -> list[float]:
    """The per-epoch mean training loss of a plain loop. ``decay``: ``matrices`` (none on biases, norms, embedding
    tokens and positions), ``all`` or ``none``; ``reseed``: the dropout generator reseeded per epoch as spft does."""
    torch.manual_seed(12345)
    model = PlainClassifier()
    model.load_state_dict(init, strict=True)
    groups = []
    for part, lr in ((model.encoder, lr_encoder), (model.head, lr_head)):
        named = list(part.named_parameters())
        skip = {"matrices": _no_decay, "all": lambda n, p: False, "none": lambda n, p: True}[decay]
        groups.append({"params": [p for n, p in named if not skip(n, p)], "lr": lr, "weight_decay": WEIGHT_DECAY})
        groups.append({"params": [p for n, p in named if skip(n, p)], "lr": lr, "weight_decay": 0.0})
    optimizer = torch.optim.AdamW([g for g in groups if g["params"]])
    x, y = _train_split(table)
    model.train()
    losses = []
    for epoch in range(EPOCHS):
        if reseed:
            torch.manual_seed((SEED * 1_000_003 + epoch) % 2**31)
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(SEED * 100_003 + epoch))
        total, count = 0.0, 0
        for start in range(0, len(order), BATCH):
            idx = order[start:start + BATCH]
            logits = model(x[idx])
            loss = F.binary_cross_entropy_with_logits(logits, y[idx], reduction="sum") / len(idx)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total, count = total + float(loss.detach()) * len(idx), count + len(idx)
        losses.append(total / count)
    return losses


def _history(run_dir: Path) -> list[dict]:
    with open(run_dir / "history.csv") as fh:
        return list(csv.DictReader(fh))


# ---- the tests --------------------------------------------------------------------------------------------------

def test_run_had_every_recipe_switch_off(spft_run):
    run_dir, _, _ = spft_run
    rows = _history(run_dir)
    assert len(rows) == EPOCHS
    for row in rows:
        assert row["stage"] == "2" and row["open_blocks"] == str(ENCODER["num_hidden_layers"])
        assert all(float(row[f"w_{c}"]) == 1.0 for c in CLASSES)  # no class weights
        lrs = {k: float(v) for k, v in row.items() if k.startswith("lr_")}
        assert lrs["lr_head"] == LR_HEAD and lrs["lr_embeddings"] == LR_ENCODER  # constant, embeddings open
        assert all(v == LR_ENCODER for k, v in lrs.items() if k != "lr_head"), lrs
    total = sum(p.numel() for p in PlainClassifier().parameters())
    assert int(rows[0]["trainable_params"]) == total  # everything trains from the first step


def test_spft_train_equals_a_plain_loop(spft_run):
    run_dir, init, table = spft_run
    spft = [float(r["train_loss"]) for r in _history(run_dir)]
    plain = plain_loop(init, table)
    assert spft == pytest.approx(plain, rel=RTOL), f"spft {spft} vs plain loop {plain}"
    assert spft[-1] < spft[0]  # it trained


@pytest.mark.parametrize("change", [
    {"lr_encoder": LR_HEAD},  # the encoder at the head's learning rate
    {"lr_encoder": LR_ENCODER / 10},
    {"decay": "all"},  # weight decay on biases, norms and tokens too
    {"decay": "none"},
    {"reseed": False},  # dropout noise not drawn from the epoch's seed
])
def test_the_comparison_would_see_a_change(spft_run, change):
    run_dir, init, table = spft_run
    spft = np.array([float(r["train_loss"]) for r in _history(run_dir)])
    other = np.array(plain_loop(init, table, **change))
    worst = float(np.max(np.abs(other - spft) / np.abs(spft)))
    assert worst > 10 * RTOL and math.isfinite(worst), f"{change}: relative difference {worst:.2e} only"
