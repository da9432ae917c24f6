"""How the recipe sees a model: embeddings, a list of encoder blocks (bottom -> top), a final norm and a head.

Every engine (Lightning classification, Ultralytics detection, SAM2 segmentation) describes its model with one
:class:`LayerGroups`; stages, freezing, optimizer groups and schedules are then computed from it alone, so the
recipe never needs to know whether the encoder is a ViT, a Hiera or a CNN backbone.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

HEAD = "head"
EMBEDDINGS = "embeddings"
FINAL_NORM = "final_norm"


def block_part(index: int) -> str:
    """Name of the part that holds encoder block ``index`` (e.g. ``"block3"``)."""
    return f"block{index}"


@dataclass
class LayerGroups:
    """Named parts of a model as the recipe sees them.

    Attributes:
        blocks: Encoder blocks, bottom -> top (block ``len(blocks) - 1`` is the one nearest the head).
        head: The task head; always trainable.
        embeddings: Patch/position embeddings (or a CNN stem); opened last, and only when the plan asks for it.
        final_norm: The encoder's final norm; opened together with the top block.
    """

    blocks: list[nn.Module]
    head: nn.Module
    embeddings: nn.Module | None = None
    final_norm: nn.Module | None = None

    def __post_init__(self) -> None:
        self.blocks = list(self.blocks)
        for i, block in enumerate(self.blocks):
            if not isinstance(block, nn.Module):
                raise TypeError(f"blocks[{i}] must be an nn.Module, got {type(block).__name__}")
        if not isinstance(self.head, nn.Module):
            raise TypeError(f"head must be an nn.Module, got {type(self.head).__name__}")

    @property
    def n_blocks(self) -> int:
        """Number of encoder blocks."""
        return len(self.blocks)

    def encoder_modules(self) -> list[nn.Module]:
        """Encoder parts in bottom -> top order: embeddings (if any), blocks, final norm (if any)."""
        modules: list[nn.Module] = []
        if self.embeddings is not None:
            modules.append(self.embeddings)
        modules.extend(self.blocks)
        if self.final_norm is not None:
            modules.append(self.final_norm)
        return modules

    def named_parts(self) -> list[tuple[str, nn.Module, int | None]]:
        """All parts as ``(part name, module, block index or None)``, bottom -> top, head last.

        Part names are ``"embeddings"``, ``"block{i}"``, ``"final_norm"`` and ``"head"``; optimizer groups and
        schedules are keyed by them.
        """
        parts: list[tuple[str, nn.Module, int | None]] = []
        if self.embeddings is not None:
            parts.append((EMBEDDINGS, self.embeddings, None))
        parts.extend((block_part(i), block, i) for i, block in enumerate(self.blocks))
        if self.final_norm is not None:
            parts.append((FINAL_NORM, self.final_norm, None))
        parts.append((HEAD, self.head, None))
        return parts
