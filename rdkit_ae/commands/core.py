"""``rdkit plugins``, ``rdkit recipes``, ``rdkit info``: look around before training."""

from __future__ import annotations

from typing import List, Optional

import typer

from rdkit_ae.commands.app import app, handle_errors, new_app
from rdkit_ae.text import fmt

recipes_app = new_app(help="List zoo recipes, or show one resolved.", no_args_is_help=False)
app.add_typer(recipes_app, name="recipes")


def _console():
    from rich.console import Console

    return Console()


@app.command()
@handle_errors
def plugins(
    kind: Optional[str] = typer.Option(None, "--kind", "-k", help="encoder, decoder, quantizer, loss or callback"),
) -> None:
    """List registered plugins: kind, name, origin and summary."""
    from rich.table import Table

    from rdkit_ae.registry import REGISTRY

    table = Table("kind", "name", "origin", "summary", title="rdkit-ae plugins")
    for info in REGISTRY.list(kind):
        table.add_row(info.kind, info.name, info.origin, info.summary)
    console = _console()
    console.print(table)
    for failure in REGISTRY.failures:
        console.print(
            f"[yellow]plugin '{failure.name}' from {failure.origin} failed to load: {failure.error}[/]", soft_wrap=True
        )


@recipes_app.callback(invoke_without_command=True)
@handle_errors
def recipes(ctx: typer.Context) -> None:
    """List the zoo recipes with their descriptions."""
    if ctx.invoked_subcommand is not None:
        return
    from rich.table import Table

    from rdkit_ae.recipe import load_recipe, zoo_names

    table = Table("recipe", "description", title="rdkit-ae zoo")
    for name in zoo_names():
        table.add_row(name, load_recipe(name).description)
    _console().print(table)


@recipes_app.command("show")
@handle_errors
def recipes_show(
    name: str = typer.Argument(..., help="zoo name or path to a .toml recipe"),
    set_: List[str] = typer.Option([], "--set", help="override: dotted.key=value (TOML value)"),
) -> None:
    """Print a recipe fully resolved (extends, overrides and defaults applied)."""
    from rdkit_ae.recipe import load_recipe

    recipe = load_recipe(name, set_)
    typer.echo(f"# {recipe.name} ({recipe.source})")
    typer.echo(recipe.to_toml(), nl=False)


@app.command()
@handle_errors
def info(
    recipe: str = typer.Argument(..., help="zoo name or path to a .toml recipe"),
    set_: List[str] = typer.Option([], "--set", help="override: dotted.key=value (TOML value)"),
    size: str = typer.Option("32x32", help="image size HxW for the latent shape and nominal rate"),
) -> None:
    """Build a recipe's model and show its parts, parameter counts, latent and rate."""
    from rich.table import Table

    from rdkit_ae.errors import RdkitError
    from rdkit_ae.evaluation.metrics import cr_from_bpp
    from rdkit_ae.model import build_model
    from rdkit_ae.recipe import load_recipe

    try:
        h, w = (int(v) for v in size.lower().split("x"))
    except ValueError:
        raise RdkitError(f"--size must look like HxW (e.g. 32x32), got '{size}'") from None
    resolved = load_recipe(recipe, set_)
    model = build_model(resolved)
    table = Table("part", "plugin", "parameters", title=f"{resolved.name}: {resolved.description}")
    for part, attr in (("encoder", "g_a"), ("quantizer", "latent_codec"), ("decoder", "g_s")):
        n = sum(p.numel() for p in getattr(model, attr).parameters())
        table.add_row(part, resolved[part]["name"], fmt(n, ","))
    console = _console()
    console.print(table)
    k, lh, lw = model.latent_shape(h, w)
    console.print(f"stride {model.stride}; latent for {h}x{w}: {k}x{lh}x{lw}")
    bits = model.nominal_bits(h, w)
    if bits is not None:
        bpp = bits / (h * w)
        nbytes = bits // 8 if bits % 8 == 0 else bits / 8
        console.print(
            f"fixed rate: {bits} bits = {nbytes} bytes per image, {fmt(bpp, 'g')} bpp, CR {fmt(cr_from_bpp(bpp), 'g')}"
        )
    else:
        console.print("entropy-coded: the rate depends on the image (see `rdkit eval`)")
