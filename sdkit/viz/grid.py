"""``Grid``: images on two labelled axes (what ``sdkit.sweep`` returns), shown as one figure or one PNG."""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from PIL import Image as PILImage
from PIL import ImageDraw

if TYPE_CHECKING:
    from sdkit.viz.figure import Figure


@dataclass
class Grid:
    """``images[row][col]`` (PIL), with axis labels; ``latents``/``parameters`` per cell when known."""

    images: list[list[PILImage.Image]]
    x_labels: list[str]
    y_labels: list[str]
    x_name: str = ""
    y_name: str = ""
    latents: list[list[Any]] | None = None
    parameters: list[list[Any]] | None = None
    title: str = ""
    batches: int = 0  # how many batched sampler runs made the grid
    notes: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.images) != len(self.y_labels) or any(len(r) != len(self.x_labels) for r in self.images):
            raise ValueError(
                f"grid of {len(self.images)} rows x {[len(r) for r in self.images]} columns does not match "
                f"{len(self.y_labels)} row labels and {len(self.x_labels)} column labels"
            )

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, columns)"""
        return len(self.y_labels), len(self.x_labels)

    def __len__(self) -> int:
        return self.shape[0] * self.shape[1]

    def cell(self, row: int, col: int) -> PILImage.Image:
        return self.images[row][col]

    def plot(self, size: float = 1.6) -> Figure:
        """A matplotlib figure: columns labelled with the x values, rows with the y values, axes named."""
        from sdkit.viz.figure import Figure

        rows, cols = self.shape
        fig = Figure(figsize=(size * cols + 0.6, size * rows + 0.6), layout="constrained")
        axes = fig.subplots(rows, cols, squeeze=False)
        for r in range(rows):
            for c in range(cols):
                ax = axes[r][c]
                ax.imshow(self.images[r][c])
                ax.set_xticks([])
                ax.set_yticks([])
                if r == 0:
                    ax.set_title(self.x_labels[c], fontsize=8)
                if c == 0 and self.y_labels[r]:
                    ax.set_ylabel(self.y_labels[r], fontsize=8)
        names = " / ".join(f"{axis}: {n}" for axis, n in (("x", self.x_name), ("y", self.y_name)) if n)
        fig.suptitle(f"{self.title}\n{names}" if self.title else names, fontsize=9)
        return fig

    def to_pil(self, margin: int = 70, header: int = 18) -> PILImage.Image:
        """One image: the cells side by side with the x labels on top and the y labels on the left."""
        rows, cols = self.shape
        w, h = self.images[0][0].size
        scale = max(1, 96 // max(w, h))  # small model outputs are enlarged so that they can be seen
        cw, ch = w * scale, h * scale
        left = margin if any(self.y_labels) else 0
        sheet = PILImage.new("RGB", (left + cols * cw, header * 2 + rows * ch), "white")
        draw = ImageDraw.Draw(sheet)
        draw.text((2, 2), f"{self.title}  [x: {self.x_name}, y: {self.y_name}]"[:200], fill="black")
        for c, text in enumerate(self.x_labels):
            draw.text((left + c * cw + 2, header + 2), text[: max(4, cw // 6)], fill="black")
        for r in range(rows):
            if left:
                draw.text((2, header * 2 + r * ch + ch // 2), self.y_labels[r][: margin // 6], fill="black")
            for c in range(cols):
                cell = self.images[r][c].resize((cw, ch), PILImage.Resampling.NEAREST)
                sheet.paste(cell, (left + c * cw, header * 2 + r * ch))
        return sheet

    def _repr_png_(self) -> bytes:
        buf = io.BytesIO()
        self.to_pil().save(buf, format="PNG")
        return buf.getvalue()
