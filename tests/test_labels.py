"""Tests for :mod:`ctrd.labels`."""

from __future__ import annotations

import pytest

from ctrd import errdefs, labels


def test_constants() -> None:
    assert labels.MAX_SIZE == 4096
    assert labels.GC_ROOT == "containerd.io/gc.root"
    assert labels.GC_EXPIRE == "containerd.io/gc.expire"
    assert labels.GC_REF_CONTENT == "containerd.io/gc.ref.content"
    assert labels.SHAREABLE_NAMESPACE == "containerd.io/namespace.shareable"


def test_within_limit() -> None:
    labels.validate("k", "v")
    labels.validate("", "")
    labels.validate("k" * 10, "v" * (4096 - 10))
    labels.validate_all({})
    labels.validate_all({labels.GC_ROOT: "2024-01-01T00:00:00Z", "a": "b" * 4000})


def test_too_big() -> None:
    with pytest.raises(errdefs.InvalidArgument) as info:
        labels.validate("key", "v" * 4094)
    assert str(info.value) == (
        "label key and value length (4097 bytes) greater than maximum size (4096 bytes), key: key"
        ": invalid argument"
    )


def test_key_truncated_to_64_bytes() -> None:
    key = "k" * 100
    with pytest.raises(errdefs.InvalidArgument) as info:
        labels.validate(key, "v" * 4000)
    assert info.value.context == (
        f"label key and value length (4100 bytes) greater than maximum size (4096 bytes), key: {'k' * 64}"
    )


def test_size_in_bytes() -> None:
    # 2049 two-byte characters: 4098 bytes although only 2049 characters.
    with pytest.raises(errdefs.InvalidArgument, match=r"length \(4098 bytes\)"):
        labels.validate("k", "é" * 2048 + "v")
    labels.validate("k", "é" * 2047 + "v")
    # A multi-byte character cut at the 64-byte mark is dropped from the message.
    with pytest.raises(errdefs.InvalidArgument) as info:
        labels.validate("a" + "é" * 40, "v" * 4096)
    assert info.value.context.endswith("key: a" + "é" * 31)


def test_validate_all_reports_first_bad_label() -> None:
    with pytest.raises(errdefs.InvalidArgument, match="key: big"):
        labels.validate_all({"ok": "v", "big": "x" * 5000})
