"""Tests for :mod:`ctrd.identifiers`."""

from __future__ import annotations

import pytest

from ctrd import errdefs, golang, identifiers

PATTERN = "^[A-Za-z0-9]+(?:[._-](?:[A-Za-z0-9]+))*$"


@pytest.mark.parametrize(
    "name",
    [
        "default",
        "k8s.io",
        "moby",
        "a",
        "0",
        "foo.boo",
        "swarmkit.docker.io",
        "0912341234",
        "task.0.0123456789",
        "container.system-75-f19a.00",
        "underscores_are_allowed",
        "MixedCase",
        "a" * 76,
    ],
)
def test_valid(name: str) -> None:
    identifiers.validate(name)


@pytest.mark.parametrize(
    "name",
    [
        "foo/foo",
        "foo/..",
        "foo..foo",
        "foo.-boo",
        "-foo.boo",
        "foo.boo-",
        "but__only_tasteful_underscores",
        "zn--e9.org",
        "default--default",
        ".",
        "a.",
        "a b",
        "é",
        "foo\n",
        "\nfoo",
        "foo\x00",
    ],
)
def test_invalid(name: str) -> None:
    with pytest.raises(errdefs.InvalidArgument) as info:
        identifiers.validate(name)
    assert info.value.context == f"identifier {golang.quote(name)} must match {PATTERN}"
    assert str(info.value).endswith(": invalid argument")


def test_messages() -> None:
    with pytest.raises(errdefs.InvalidArgument) as info:
        identifiers.validate("")
    assert str(info.value) == "identifier must not be empty: invalid argument"

    with pytest.raises(errdefs.InvalidArgument) as info:
        identifiers.validate("a" * 77)
    assert str(info.value) == (
        f'identifier "{"a" * 77}" greater than maximum length (76 characters): invalid argument'
    )

    with pytest.raises(errdefs.InvalidArgument) as info:
        identifiers.validate("foo/bar")
    assert str(info.value) == f'identifier "foo/bar" must match {PATTERN}: invalid argument'
    assert identifiers.PATTERN == PATTERN
    assert identifiers.MAX_LENGTH == 76


def test_length_is_in_bytes() -> None:
    # 40 two-byte characters: 80 bytes, too long before being checked for characters.
    with pytest.raises(errdefs.InvalidArgument, match="greater than maximum length"):
        identifiers.validate("é" * 40)
