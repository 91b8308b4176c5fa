"""Which entropy-parameter path decodes a file: the portable (integer) one, or the float one of old files.

Files of versions 3 and 4 are written on the portable path (see
:mod:`rdkit_ae.plugin.exact`); versions 1 and 2 were written by the float
networks, so they decode on those, as before, with the same guarantees as
before (same machine and software stack: docs/format.md, Determinism).
"""

from __future__ import annotations

import contextlib
from typing import Iterator

from rdkit_ae.plugin.hyperprior import HyperpriorCodec


def path_for_version(model, checked: bool):
    """Decoding a file: version 1/2 (not ``checked``) on the float path; version 3/4 as the model is set."""
    return contextlib.nullcontext() if checked else entropy_path(model, portable=False)


@contextlib.contextmanager
def entropy_path(model, portable: bool) -> Iterator[None]:
    """Inside the block, every hyperprior-family quantizer of ``model`` uses the portable path or the float one."""
    codecs = [m for m in model.modules() if isinstance(m, HyperpriorCodec)]
    before = [c.portable for c in codecs]
    for c in codecs:
        c.portable = portable
    try:
        yield
    finally:
        for c, b in zip(codecs, before):
            c.portable = b


__all__ = ["entropy_path", "path_for_version"]
