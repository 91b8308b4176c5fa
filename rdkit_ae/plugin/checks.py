"""Parameter and stream checks for plugins: one-line errors that name the plugin and the parameter.

A recipe is user input: a plugin validates every parameter in its constructor
with these helpers, so a typo gives ``quantizer 'x': bits must be in 1..16;
got 40`` instead of a traceback from deep inside torch. ``check_streams``
validates the ``strings`` handed to ``decompress`` (they come from a file).
"""

from __future__ import annotations

from typing import Any, Sequence

from rdkit_ae.errors import FormatError, PluginError


class BitstreamError(FormatError):
    """A compressed latent string that does not match what the quantizer expects."""


def check_choice(plugin: str, param: str, value: object, allowed: Sequence[str]) -> str:
    """Return ``value`` if it is one of ``allowed``, else raise a one-line PluginError."""
    if not isinstance(value, str) or value not in allowed:
        raise PluginError(f"{plugin}: {param} must be one of {', '.join(repr(a) for a in allowed)}; got {value!r}")
    return value


def check_int(plugin: str, param: str, value: object, minimum: int = 1, maximum: int | None = None) -> int:
    """Return ``value`` as an int if it is an integer in [minimum, maximum]."""
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise PluginError(f"{plugin}: {param} must be an integer; got {value!r}")
    if value < minimum or (maximum is not None and value > maximum):
        bounds = f">= {minimum}" if maximum is None else f"in {minimum}..{maximum}"
        raise PluginError(f"{plugin}: {param} must be {bounds}; got {value}")
    return int(value)


def check_bool(plugin: str, param: str, value: object) -> bool:
    """Return ``value`` if it is a boolean (TOML ``true``/``false``), else raise a one-line PluginError."""
    if not isinstance(value, bool):
        raise PluginError(f"{plugin}: {param} must be true or false; got {value!r}")
    return value


def check_streams(plugin: str, strings: Any, streams: int) -> list[list[bytes]]:
    """``strings`` as ``streams`` lists of bytes, one per image, all of one length; else a BitstreamError."""
    if not isinstance(strings, (list, tuple)) or len(strings) != streams:
        got = len(strings) if isinstance(strings, (list, tuple)) else type(strings).__name__
        raise BitstreamError(f"{plugin}: expected {streams} stream(s) of strings, got {got}")
    batch = None
    for s in strings:
        if not isinstance(s, (list, tuple)) or not all(isinstance(b, (bytes, bytearray, memoryview)) for b in s):
            raise BitstreamError(f"{plugin}: each stream must be a list of bytes (one per image)")
        if batch is not None and len(s) != batch:
            raise BitstreamError(f"{plugin}: streams hold different numbers of images ({batch} vs {len(s)})")
        batch = len(s)
    return [list(s) for s in strings]


def check_latent(plugin: str, y: Any, channels: int, stride: int = 1) -> None:
    """``y`` must be a (B, channels, h, w) latent with h and w multiples of ``stride`` (what compress can code)."""
    shape = tuple(getattr(y, "shape", ()))
    if len(shape) != 4 or shape[1] != channels or shape[2] % stride or shape[3] % stride:
        rule = " with even h and w" if stride == 2 else f" with h and w multiples of {stride}" if stride > 2 else ""
        need = f"a (B, {channels}, h, w) latent{rule}"
        raise BitstreamError(f"{plugin}: expected {need}, got shape {shape}")


def check_shape(plugin: str, shape: Any, keys: dict[str, int]) -> dict[str, tuple[int, ...]]:
    """A ``{"y": (...), "hyper": (...)}`` shape from a file: the given keys, each a tuple of that many positive ints."""
    what = f"{plugin}: shape must be {{{', '.join(f'{k!r}: ({len_}-tuple)' for k, len_ in keys.items())}}}"
    if not isinstance(shape, dict) or set(shape) != set(keys):
        raise BitstreamError(f"{what}; got {shape!r}")
    try:
        out = {k: tuple(int(s) for s in shape[k]) for k in keys}
    except (TypeError, ValueError):
        raise BitstreamError(f"{what}; got {shape!r}") from None
    if any(len(out[k]) != n or min(out[k]) < 1 for k, n in keys.items()):
        raise BitstreamError(f"{what}; got {shape!r}")
    return out


__all__ = ["BitstreamError", "check_bool", "check_choice", "check_int", "check_latent", "check_shape", "check_streams"]
