"""Size limits set by environment variables, read in one place with one error message.

``RDKIT_MAX_PARAMS`` (parameters of a model), ``RDKIT_MAX_IMAGE_PIXELS``
(pixels of an image read) and ``RDKIT_MAX_ARRAY_BYTES`` (bytes of one
``.npz`` array) bound what untrusted recipes, checkpoints, images and data
files may make this process allocate (see docs/format.md, threat model).
Each is read when it is needed, so a test or a command may change it.
"""

from __future__ import annotations

import os

from rdkit_ae.errors import RdkitError


def env_limit(name: str, default: int, unit: str, error: type[RdkitError] = RdkitError) -> int:
    """The positive integer in ``$name`` (``1e6`` style accepted), or ``default`` when it is unset or empty.

    Anything else raises ``error`` (a :class:`RdkitError`) in one line:
    ``NAME must be a positive number of UNIT, got 'TEXT'``.
    """
    text = os.environ.get(name, "").strip()
    if not text:
        return int(default)
    try:
        value = int(float(text))
    except (ValueError, OverflowError):
        value = 0
    if value < 1:
        raise error(f"{name} must be a positive number of {unit}, got {text!r}")
    return value
