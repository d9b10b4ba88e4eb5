"""Tests for :mod:`ctrd.golang`: Go's quoting and durations (parsing: ``tests/gc/test_scheduler.py``)."""

from __future__ import annotations

import pytest

from ctrd import golang


@pytest.mark.parametrize(
    ("s", "quoted"),
    [
        ("", '""'),
        ("abc", '"abc"'),
        ('a"b', '"a\\"b"'),
        ("a\\b", '"a\\\\b"'),
        ("\a\b\f\n\r\t\v", '"\\a\\b\\f\\n\\r\\t\\v"'),
        ("\x00\x1f\x7f", '"\\x00\\x1f\\x7f"'),
        ("é牛😀", '"é牛😀"'),
        ("\u00a0", '"\\u00a0"'),
        ("\u00ad", '"\\u00ad"'),
        ("\u2028", '"\\u2028"'),
        ("\U000e0001", '"\\U000e0001"'),
        ("\ud800", '"\\ufffd"'),
        (" ~'`", '" ~\'`"'),
    ],
)
def test_quote(s: str, quoted: str) -> None:
    assert golang.quote(s) == quoted


def test_quote_limit() -> None:
    assert golang.quote("a" * 5, limit=3) == '"aaa"…(5 characters)'
    assert golang.quote("a" * 200, limit=None) == '"' + "a" * 200 + '"'


@pytest.mark.parametrize(
    ("literal", "quotes", "text"),
    [
        (r'""', '"', ""),
        (r'"a\\"', '"', "a\\"),
        (r'"\x41\101\u00e9\U0001F600\n\t"', '"', "AAé😀\n\t"),
        (r'"\ud800"', '"', "\ufffd"),  # a surrogate half reads as RuneError
        (r'"\xff"', '"', "\ufffd"),  # a byte that is not UTF-8
        (r'"a\"b"', '"', 'a"b'),
        (r"/a\/b/", '"/|', "a/b"),
        (r"|a\|b|", '"/|', "a|b"),
        (r'"a/b|c"', '"/|', "a/b|c"),
    ],
)
def test_unquote(literal: str, quotes: str, text: str) -> None:
    assert golang.unquote(literal, quotes) == text


@pytest.mark.parametrize(
    ("literal", "quotes"),
    [
        ("", '"'),
        ('"', '"'),
        ("abc", '"'),
        ("/a/", '"'),  # not one of the delimiters allowed
        ('"a"b"', '"'),
        (r'"a\"', '"'),  # the backslash escapes the closing delimiter
        (r'"\/"', '"/|'),  # only the delimiter in use may be escaped
        (r"/\|/", '"/|'),
        (r'"\q"', '"'),
        (r'"\x4"', '"'),
        (r'"\400"', '"'),
        (r'"\U00110000"', '"'),
        ('"a\nb"', '"'),  # a raw newline
    ],
)
def test_unquote_invalid(literal: str, quotes: str) -> None:
    with pytest.raises(ValueError, match="invalid syntax"):
        golang.unquote(literal, quotes)


def test_format_seconds() -> None:
    assert golang.format_seconds(0.0015) == "1.5ms"
    assert golang.format_seconds(2.0) == "2s"
    assert golang.format_seconds(125.5) == "2m5.5s"
