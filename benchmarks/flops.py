"""FLOPs per image of a ViT encoder step, bf16 peak of NVIDIA GPUs and model FLOPs utilisation (MFU); RAD-DINO's config.

Not a test and not part of spft: ``benchmarks/bench.py`` imports it to turn img/s into MFU. Counts are *model*
FLOPs (one multiply-add = 2 FLOPs) of the matrix products; norms, softmax, GELU, biases and the optimizer are left
out (< 2 % for a ViT-B), and so is the recomputation of gradient checkpointing (the usual MFU convention: the same
work scores the same with or without checkpointing).

For a ViT block with hidden size ``D``, MLP ratio ``r`` and ``N`` tokens (CLS and registers included), forward:

    linear layers   (8 + 4r) N D^2      = 2 x params x tokens, params = QKV 3D^2 + out D^2 + MLP 2rD^2
    attention       4 N^2 D             = QK^T (2 N^2 D) + attention x V (2 N^2 D)

RAD-DINO (D=768, r=4, N = 1 + 37^2 = 1370 at 518 px, 12 blocks): 25.16 GFLOP per block, 303.1 GFLOP per image
forward with the patch embedding (1.2 GFLOP) — exactly what ``torch.utils.flop_counter.FlopCounterMode`` counts for
transformers' Dinov2Model with eager attention (its CPU SDPA kernel has no FLOP formula). A training step costs the
forward of every block (frozen ones included) plus ~2x the forward of each *trainable* block for backward (gradients
with respect to activations and to weights; the frozen blocks below get no backward at all), plus 3x the head.
"""

from __future__ import annotations

# microsoft/rad-dino config.json (Dinov2Model): ViT-B/14 at 518 px, no register tokens (docs/decisions.md#rad-dino).
# Dinov2Config kwargs; bench.py adds model_type: dinov2.
RADDINO = dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, mlp_ratio=4, patch_size=14,
               image_size=518, num_channels=3, layerscale_value=1.0, drop_path_rate=0.0, layer_norm_eps=1e-6,
               qkv_bias=True, use_swiglu_ffn=False, hidden_act="gelu", hidden_dropout_prob=0.0,
               attention_probs_dropout_prob=0.0)
RADDINO_TOKENS = 1 + (RADDINO["image_size"] // RADDINO["patch_size"]) ** 2  # CLS + 37 x 37 patches = 1370

# Dense (no sparsity) bf16 Tensor Core peak, TFLOP/s, from NVIDIA's datasheets: they print the 2:4-sparsity figure
# ("with sparsity"), which is twice the dense one, so the table holds the printed number and halves it.
#   H100 SXM 1,979 | H100 PCIe 1,513 | H100 NVL 1,671 — NVIDIA H100 Tensor Core GPU datasheet
#   H200 SXM 1,979 | H200 NVL 1,671                   — NVIDIA H200 Tensor Core GPU datasheet
#   GH200 (its Hopper GPU) 1,979                       — NVIDIA GH200 Grace Hopper Superchip datasheet
#   A100 SXM / PCIe, 40 and 80 GB 624                  — NVIDIA A100 Tensor Core GPU datasheet
# Matched on the lower-cased torch.cuda.get_device_name(), first row whose words all occur, e.g.
# "NVIDIA H100 80GB HBM3" (SXM), "NVIDIA H100 PCIe", "NVIDIA H200", "NVIDIA A100-SXM4-80GB".
_BF16_SPARSE_TFLOPS: tuple[tuple[tuple[str, ...], float], ...] = (
    (("gh200",), 1979.0),
    (("h200", "nvl"), 1671.0),
    (("h200",), 1979.0),
    (("h100", "nvl"), 1671.0),
    (("h100", "pcie"), 1513.0),
    (("h100",), 1979.0),
    (("a100",), 624.0),
)


def vit_block_forward_flops(hidden: int, mlp_ratio: float, tokens: int) -> float:
    """Forward FLOPs of one ViT block for one image: ``(8 + 4 r) N D^2 + 4 N^2 D``."""
    d, n = float(hidden), float(tokens)
    return (8.0 + 4.0 * mlp_ratio) * n * d * d + 4.0 * n * n * d


def patch_embed_flops(hidden: int, patch_size: int, tokens: int, channels: int = 3, prefix_tokens: int = 1) -> float:
    """Forward FLOPs of a conv patch embedding: ``2 (P^2 C) D`` per patch token."""
    return 2.0 * patch_size * patch_size * channels * hidden * (tokens - prefix_tokens)


def mlp_head_flops(in_dim: int = 768, hidden: int = 512, n_classes: int = 14) -> float:
    """Forward FLOPs of the paper's head (Linear D→H → Linear H→H → Linear H→C) for one image."""
    return 2.0 * (in_dim * hidden + hidden * hidden + hidden * n_classes)


def vit_forward_flops_per_image(hidden: int, layers: int, mlp_ratio: float, tokens: int, head_flops: float = 0.0,
                                embed_flops: float = 0.0) -> float:
    """Forward FLOPs per image: ``layers x ((8 + 4 r) N D^2 + 4 N^2 D) + embed_flops + head_flops``.

    What a frozen-encoder pass costs (stage 1, or computing the stage-1 feature cache: ``head_flops=0``).
    """
    return layers * vit_block_forward_flops(hidden, mlp_ratio, tokens) + embed_flops + head_flops


def vit_train_flops_per_image(hidden: int, layers: int, mlp_ratio: float, tokens: int, trainable_layers: int,
                              head_flops: float = 0.0, embed_flops: float = 0.0) -> float:
    """FLOPs per image of one training step with the top ``trainable_layers`` blocks trainable.

    ``F_block x (layers + 2 x trainable_layers) + embed_flops + 3 x head_flops``: forward through every block,
    backward (2x forward) through the trainable top blocks only, the head forward + backward. The embedding's
    backward (when it trains too) and checkpointing's recompute are not counted.
    """
    if not 0 <= trainable_layers <= layers:
        raise ValueError(f"trainable_layers must be in [0, {layers}], got {trainable_layers}")
    block = vit_block_forward_flops(hidden, mlp_ratio, tokens)
    return block * (layers + 2 * trainable_layers) + embed_flops + 3.0 * head_flops


def raddino_flops(trainable_layers: int = 12, n_classes: int = 14, train: bool = True) -> float:
    """FLOPs per image of RAD-DINO + the paper's head at 518 px (training step, or forward with ``train=False``)."""
    d, layers, r = RADDINO["hidden_size"], RADDINO["num_hidden_layers"], RADDINO["mlp_ratio"]
    embed = patch_embed_flops(d, RADDINO["patch_size"], RADDINO_TOKENS, RADDINO["num_channels"])
    head = mlp_head_flops(d, 512, n_classes)
    if train:
        return vit_train_flops_per_image(d, layers, r, RADDINO_TOKENS, trainable_layers, head, embed)
    return vit_forward_flops_per_image(d, layers, r, RADDINO_TOKENS, head, embed)


def bf16_peak_flops(device_name: str | None) -> float | None:
    """Dense bf16 Tensor Core peak of a GPU in FLOP/s (NVIDIA datasheets, see the table above); ``None`` if unknown."""
    if not device_name:
        return None
    name = device_name.lower()
    for words, sparse_tflops in _BF16_SPARSE_TFLOPS:
        if all(w in name for w in words):
            return sparse_tflops / 2.0 * 1e12
    return None


def mfu(img_per_s: float, flops_per_image: float, peak: float | None) -> float | None:
    """Model FLOPs utilisation: achieved FLOP/s (``img_per_s x flops_per_image``) / ``peak``; ``None`` without one."""
    if not peak:
        return None
    return img_per_s * flops_per_image / peak


if __name__ == "__main__":
    for k in (0, 2, 10, 12):
        print(f"RAD-DINO 518 px, top {k:2d} blocks trainable: {raddino_flops(k) / 1e9:7.1f} GFLOP/image per step")
    print(f"RAD-DINO 518 px forward (frozen encoder + head): {raddino_flops(train=False) / 1e9:7.1f} GFLOP/image")
    for gpu in ("NVIDIA H100 80GB HBM3", "NVIDIA H100 PCIe", "NVIDIA H200", "NVIDIA A100-SXM4-80GB", "Tesla T4"):
        peak = bf16_peak_flops(gpu)
        print(f"{gpu:24s} bf16 dense peak: {peak / 1e12:.1f} TFLOP/s" if peak else f"{gpu:24s} unknown")
