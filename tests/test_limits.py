"""The environment-variable limits: one reader (rdkit_ae.limits.env_limit), one message, the old names and defaults."""

from __future__ import annotations

import pytest

from rdkit_ae.data.npz import DEFAULT_MAX_ARRAY_BYTES, array_byte_limit
from rdkit_ae.data.sources import DEFAULT_MAX_IMAGE_PIXELS, image_pixel_limit
from rdkit_ae.errors import DataError, RdkitError, RecipeError
from rdkit_ae.limits import env_limit
from rdkit_ae.model import DEFAULT_MAX_PARAMS, param_limit

LIMITS = [
    ("RDKIT_MAX_PARAMS", param_limit, DEFAULT_MAX_PARAMS, 200_000_000, "parameters", RecipeError),
    ("RDKIT_MAX_IMAGE_PIXELS", image_pixel_limit, DEFAULT_MAX_IMAGE_PIXELS, 1 << 25, "pixels", DataError),
    ("RDKIT_MAX_ARRAY_BYTES", array_byte_limit, DEFAULT_MAX_ARRAY_BYTES, 4 << 30, "bytes", DataError),
]


@pytest.mark.parametrize("name,read,default,expected,unit,error", LIMITS)
def test_each_limit_reads_its_variable_with_its_default(monkeypatch, name, read, default, expected, unit, error):
    monkeypatch.delenv(name, raising=False)
    assert read() == default == expected
    monkeypatch.setenv(name, "  ")
    assert read() == default
    monkeypatch.setenv(name, "1e3")
    assert read() == 1000


@pytest.mark.parametrize("name,read,default,expected,unit,error", LIMITS)
@pytest.mark.parametrize("bad", ["lots", "0", "-5", "nan", "1e999"])
def test_each_limit_refuses_bad_values_in_the_same_words(monkeypatch, name, read, default, expected, unit, error, bad):
    monkeypatch.setenv(name, bad)
    with pytest.raises(error) as info:
        read()
    assert str(info.value) == f"{name} must be a positive number of {unit}, got {bad!r}"


def test_env_limit_defaults_to_rdkit_error(monkeypatch):
    monkeypatch.setenv("RDKIT_TEST_LIMIT", "x")
    with pytest.raises(RdkitError, match="RDKIT_TEST_LIMIT must be a positive number of things"):
        env_limit("RDKIT_TEST_LIMIT", 3, "things")
    monkeypatch.delenv("RDKIT_TEST_LIMIT")
    assert env_limit("RDKIT_TEST_LIMIT", 3, "things") == 3
