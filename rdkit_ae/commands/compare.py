"""``rdkit compare``: a grid of crops at one bpp or CR (API: :mod:`rdkit_ae.evaluation.compare`, the picture
:mod:`rdkit_ae.evaluation.compare_figure`)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from rdkit_ae.commands.app import app, handle_errors
from rdkit_ae.commands.outputs import FORCE_HELP, check_outputs


def _codecs(value: str) -> list[str]:
    """``"webp,jpeg"`` -> checked Pillow codec names; ``"none"`` or ``""``: none."""
    from rdkit_ae.evaluation.classic import get_codec

    names = [p.strip().lower() for p in value.split(",") if p.strip() and p.strip().lower() != "none"]
    for n in names:
        get_codec(n)  # one line for an unknown name
    return list(dict.fromkeys(names))


def _outputs(out: Path, images: List[Path], models: List[Path], force: bool) -> None:
    from rdkit_ae.errors import RdkitError

    if out.suffix.lower() != ".png":
        raise RdkitError(f"-o {out}: give a .png path (the numbers go beside it as .json and .csv)")
    extra = [("-o's .json", out.with_suffix(".json")), ("-o's .csv", out.with_suffix(".csv"))]
    check_outputs([("-o", out), *extra], [*images, *models], force=force)


@app.command("compare")
@handle_errors
def compare(
    images: List[Path] = typer.Argument(..., help="image files (PNG, ...): one row each"),
    models: List[Path] = typer.Option([], "--model", "-m", help="checkpoint: one column each (repeat the option)"),
    bpp: Optional[float] = typer.Option(None, "--bpp", help="the target: bits per pixel of the whole file"),
    cr: Optional[float] = typer.Option(None, "--cr", help="the target as a compression ratio (24 / bpp)"),
    crop: int = typer.Option(64, "--crop", min=1, help="show the most detailed CROP x CROP square of each image"),
    crop_box: Optional[str] = typer.Option(
        None, "--crop-box", help="show this region of every image instead: x,y,w,h in pixels from the top-left"
    ),
    metrics: str = typer.Option(
        "psnr,ms-ssim,haarpsi",
        "--metrics",
        help="metrics under each tile, on the whole image: any of rdkit eval's (psnr, ssim, ms-ssim, haarpsi, "
        "ms-gmsd, vsi, mdsi, lpips, dists)",
    ),
    codecs: str = typer.Option(
        "webp", "--codecs", help="Pillow codecs to show, comma-separated: webp, jpeg, avif; none"
    ),
    out: Path = typer.Option(..., "--out", "-o", help="the grid, a .png; its numbers go beside it as .json and .csv"),
    passes: int = typer.Option(12, "--passes", help="rate control: at most this many compresses per image and model"),
    max_pixels: Optional[int] = typer.Option(
        None, "--max-pixels", min=1, help="largest image read, in pixels (default: RDKIT_MAX_IMAGE_PIXELS or 32 MP)"
    ),
    force: bool = typer.Option(False, "--force", "-f", help=FORCE_HELP),
) -> None:
    """The original, Pillow codecs and each model at the same bpp, as a grid of crops with bpp and metrics."""
    from rdkit_ae.codec.files import read_source
    from rdkit_ae.codec.rate_control import target_of
    from rdkit_ae.evaluation import compare as api
    from rdkit_ae.evaluation.compare_figure import write_outputs
    from rdkit_ae.evaluation.crops import check_box, parse_box

    target = target_of(bpp=bpp, cr=cr)
    names = api.metric_names(metrics)
    chosen = _codecs(codecs)
    box = parse_box(crop_box) if crop_box is not None else None
    _outputs(out, images, models, force)
    api.check_request(target, chosen, names)
    pictures = [(p.name, read_source(p, max_pixels)[0]) for p in images]  # every image read before any coding
    for name, image in pictures:
        if box is not None:
            check_box(box, image.shape[0], image.shape[1], name)
    loaded = api.load_models(models)
    rows = [
        api.compare_image(name, image, loaded, target, codecs=chosen, metrics=names, crop=crop, box=box,
                          max_passes=passes)
        for name, image in pictures
    ]  # fmt: skip
    note = f"box {crop_box}" if crop_box is not None else f"the most detailed {crop}x{crop} square (luma gradients)"
    for written in write_outputs(out, rows, target, names, note):
        typer.echo(f"wrote {written}")
