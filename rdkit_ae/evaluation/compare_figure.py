"""``rdkit compare``'s picture: a grid of crops (rows: images; columns: original, Pillow codecs, models).

Each crop is enlarged by a whole factor with nearest-neighbour (each pixel a
k x k block: 32x32 CIFAR images become 192x192 and nothing is smoothed) and
placed pixel for pixel with matplotlib's ``figimage`` (Agg canvas, no
resampling), so the PNG's tiles are exactly the decoded pixels. Under each
tile: the codec, its setting, bpp and CR of the whole file, and the metrics
of the whole image. :func:`write_outputs` also writes the numbers as JSON and
CSV beside the PNG.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from rdkit_ae.evaluation.compare import Row, Tile
from rdkit_ae.evaluation.crops import crop

TILE = 192  # crops are enlarged to about this many pixels on their longer side (never shrunk)
MIN_CELL = 184  # a column is at least this wide, so the labels fit
PAD = 10  # pixels between tiles and around the grid
LINE = 14  # pixels per label line
TITLE = 30  # pixels above the grid
DPI = 100
FONT = 8.5  # points


def zoom(height: int, width: int) -> int:
    return max(1, TILE // max(height, width))


def enlarge(pixels: np.ndarray, k: int) -> np.ndarray:
    return np.repeat(np.repeat(pixels, k, axis=0), k, axis=1)


SHOWN = {"haarpsi": "HaarPSI"}  # as its authors write it; the others in capitals


def _value(name: str, v: float | None) -> str:
    from rdkit_ae.evaluation.perceptual import METRICS

    m = METRICS[name]
    label = SHOWN.get(name, name.upper()) + ("" if m.higher_is_better else "\u2193")  # arrow: lower is better
    if v is None:
        return f"{label} n/a"
    return f"{label} {v:.2f} dB" if name == "psnr" else f"{label} {v:.4f}"


def label_lines(tile: Tile, row: Row, metrics: Sequence[str]) -> list[str]:
    """The text under a tile: one line per item, as many for every tile of a figure."""
    if tile.kind == "original":
        x, y, w, h = row.box
        where = f"whole {w}x{h} image" if (w, h) == (tile.width, tile.height) else f"crop {w}x{h} at {x},{y}"
        lines = ["original", row.name, where]
    else:
        lines = [tile.codec, tile.setting, f"{tile.bpp:.3f} bpp, CR {tile.cr:.2f}"]
        lines += [_value(n, tile.metrics.get(n)) for n in metrics]
    return lines + [""] * (3 + len(metrics) - len(lines))


class Layout:
    """Pixel positions of the grid: column width, each row's top and height, the figure's size."""

    def __init__(self, rows: Sequence[Row], metrics: Sequence[str]):
        self.sizes = [self.tile_size(r) for r in rows]
        self.label_h = LINE * (3 + len(metrics)) + 4
        self.cell_w = max([MIN_CELL, *(w for w, _ in self.sizes)])
        self.columns = max(len(r.tiles) for r in rows)
        self.width = PAD + self.columns * (self.cell_w + PAD)
        self.tops = []
        y = TITLE
        for _, h in self.sizes:
            self.tops.append(y)
            y += h + self.label_h + PAD
        self.height = y

    @staticmethod
    def tile_size(row: Row) -> tuple[int, int]:
        _, _, w, h = row.box
        k = zoom(h, w)
        return w * k, h * k

    def origin(self, row: int, column: int) -> tuple[int, int]:
        """A tile's top-left corner, in pixels from the figure's top-left."""
        return PAD + column * (self.cell_w + PAD), self.tops[row]


def draw(rows: Sequence[Row], metrics: Sequence[str], title: str) -> Any:
    """The grid as a matplotlib Figure (Agg canvas) of exactly ``Layout``'s pixel size."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    lay = Layout(rows, metrics)
    fig = Figure(figsize=(lay.width / DPI, lay.height / DPI), dpi=DPI, facecolor="white")
    FigureCanvasAgg(fig)
    fig.text(PAD / lay.width, 1 - 8 / lay.height, title, fontsize=FONT + 1.5, va="top", ha="left")
    chars = int(lay.cell_w / (0.62 * FONT * DPI / 72))  # about what fits in a column
    for i, row in enumerate(rows):
        tile_w, tile_h = lay.sizes[i]
        k = zoom(row.box[3], row.box[2])
        for j, tile in enumerate(row.tiles):
            x, y = lay.origin(i, j)
            # figimage's offsets count from the bottom-left; the array's first row is drawn at the top
            fig.figimage(enlarge(crop(tile.decoded, row.box), k), xo=x, yo=lay.height - y - tile_h, origin="upper")
            for n, line in enumerate(label_lines(tile, row, metrics)):
                text = line if len(line) <= chars else line[: chars - 1] + "\u2026"
                top = y + tile_h + 3 + n * LINE
                fig.text(x / lay.width, 1 - top / lay.height, text, fontsize=FONT, va="top", ha="left")
    return fig


def png_bytes(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, facecolor="white")
    return buf.getvalue()


def summary(rows: Sequence[Row], target: Any, metrics: Sequence[str], crop_note: str) -> dict[str, Any]:
    """The JSON document: the target, the metrics, and per image its crop and each tile's numbers."""
    bpp = target.value if target.kind == "bpp" else 24 / target.value
    return {
        "target": {"kind": target.kind, "value": target.value, "bpp": bpp},
        "metrics": list(metrics),
        "crop": crop_note,
        "images": [
            {"name": r.name, "height": r.image.shape[0], "width": r.image.shape[1], "crop_box": list(r.box),
             "tiles": [t.record() for t in r.tiles]}
            for r in rows
        ],
    }  # fmt: skip


def write_outputs(path: Path, rows: Sequence[Row], target: Any, metrics: Sequence[str], crop_note: str) -> list[Path]:
    """Write the PNG at ``path`` and its numbers at ``path`` with .json and .csv suffixes (atomically)."""
    from rdkit_ae.evaluation.results import write_records_csv
    from rdkit_ae.files import atomic_write_bytes, write_json

    title = f"target {target.option}   (bpp, CR: whole files; metrics: whole images; crops enlarged, nearest)"
    data = png_bytes(draw(rows, metrics, title))
    atomic_write_bytes(path, lambda f: f.write(data))
    write_json(path.with_suffix(".json"), summary(rows, target, metrics, crop_note))
    records = [{"image": r.name, "crop_box": "{},{},{},{}".format(*r.box), **t.record()} for r in rows for t in r.tiles]
    write_records_csv(path.with_suffix(".csv"), records)
    return [path, path.with_suffix(".json"), path.with_suffix(".csv")]
