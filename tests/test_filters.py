"""Tests for :mod:`ctrd.filters` (containerd's filter language)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import pytest

from ctrd import errdefs, filters, limits
from ctrd.filters import Adaptor, Filter, Operator, Selector


@dataclass(frozen=True)
class Entry:
    name: str
    other: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)


# containerd's pkg/filters/filter_test.go corpus.
CORPUS: list[Entry] = [
    Entry("foo", labels={"foo": "true"}),
    Entry("bar"),
    Entry("foo", labels={"foo": "present", "more complex label": "present"}),
    Entry("bar", labels={"bar": "true"}),
    Entry("fooer", labels={'more complex label with \\ and "': "present"}),
    Entry("fooer", labels={'more complex label with \\ and ".post': "present"}),
    Entry("baz", other="too complex, yo"),
    Entry("bazo", other="abc"),
    Entry("compound", labels={"foo": "omg_asdf.asdf-qwer"}),
]


def adapt(entry: Entry) -> Adaptor:
    """The adaptor of containerd's test: name/other present when non-empty."""

    def field_(fieldpath: Sequence[str]) -> tuple[str, bool]:
        if fieldpath[0] == "name":
            return entry.name, bool(entry.name)
        if fieldpath[0] == "other":
            return entry.other, bool(entry.other)
        if fieldpath[0] == "labels":
            key = ".".join(fieldpath[1:])
            return entry.labels.get(key, ""), key in entry.labels
        return "", False

    return field_


def select(f: Filter) -> list[int]:
    return [i for i, entry in enumerate(CORPUS) if f.match(adapt(entry))]


ALL = list(range(len(CORPUS)))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", ALL),
        ("name", ALL),
        ("labels.foo", [0, 2, 8]),
        ("labels.foo,name", [0, 2, 8]),
        ("labels.foo==true", [0]),
        ("labels.foo==omg_asdf.asdf-qwer", [8]),
        ("name==bar", [1, 3]),
        ("name!=bar", [0, 2, 4, 5, 6, 7, 8]),
        ("name==bar,labels.bar", [3]),
        ('other=="too complex, yo"', [6]),
        ("other~=[abc]+,name!=foo", [6, 7]),
        ("other~=/[abc]+/,name!=foo", [6, 7]),
        ("other~=/[abc]{1,2}/,name!=foo", [6, 7]),
        ('other~=/[abc]{0,1}"\\//,name!=foo', []),
        ("name==bar,labels.bar==true", [3]),
        ("name==bar,labels.bar==wrong", []),
        ('name==foo,labels."more complex label"', [2]),
        ('labels."more complex label with \\\\ and \\""==present', [4]),
        ('labels."more complex label with \\\\ and \\"".post==present', [5]),
    ],
)
def test_containerd_corpus(text: str, expected: list[int]) -> None:
    assert select(filters.parse(text)) == expected
    assert select(filters.parse_all(text)) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "labels.|foo|==omg_asdf.asdf-qwer",
            "filters: parse error: [labels. >|||< foo|==omg_asdf.asdf-qwer]: invalid quote encountered",
        ),
        (
            'labels.?"more complex label with \\\\ and \\"".post==present',
            'filters: parse error: [labels. >|?|< "more complex label with \\\\ and \\"".post==present]: '
            "expected field or quoted",
        ),
        ("name==foo,", "filters: parse error: [name==foo,]: expected field or quoted"),
        ("labels.", "filters: parse error: [labels.]: expected field or quoted"),
        (
            "image~=,id?=?fbaq",
            "filters: parse error: [image~= >|,|< id?=?fbaq]: expected value or quoted",
        ),
        (
            "labels.ns/key==value",
            "filters: parse error: [labels.ns >|/|< key==value]: quoted literal not terminated",
        ),
        (
            "labels.key==/value",
            "filters: parse error: [labels.key== >|/|< value]: quoted literal not terminated",
        ),
        # No value after the operator is an error (a==\"\" compares with "").
        ("a==", "filters: parse error: [a==]: expected value or quoted"),
        ("==x", "filters: parse error: [ >|=|< =x]: expected field or quoted"),
        ("name=x", 'filters: parse error: [name >|=|< x]: unsupported operator "="'),
        ("name===x", 'filters: parse error: [name >|=|< ==x]: unsupported operator "==="'),
        ("name~x", 'filters: parse error: [name >|~|< x]: unsupported operator "~"'),
        ("name foo", 'filters: parse error: [name  >|f|< oo]: expected an operator ("=="|"!="|"~=")'),
        ("name ", 'filters: parse error: [name ]: expected an operator ("=="|"!="|"~=")'),
        ("name ?", 'filters: parse error: [name  >|?|< ]: expected an operator ("=="|"!="|"~=")'),
        # Alternative quotes are for ~= values only.
        ("name==/foo/", "filters: parse error: [name== >|/|< foo/]: invalid quote encountered"),
        ("name==|foo|", "filters: parse error: [name== >|||< foo|]: invalid quote encountered"),
        ('labels."\\g"', 'filters: parse error: [labels. >|"|< \\g"]: illegal escape sequence'),
        ('labels."\\xaz"', 'filters: parse error: [labels. >|"|< \\xaz"]: illegal numeric escape sequence'),
        ('labels."a\nb"==c', 'filters: parse error: [labels. >|"|< a\nb"==c]: quoted literal not terminated'),
        ('name=="abc', 'filters: parse error: [name== >|"|< abc]: quoted literal not terminated'),
        ("name~=/abc", "filters: parse error: [name~= >|/|< abc]: quoted literal not terminated"),
        ('"abc', 'filters: parse error: [ >|"|< abc]: quoted literal not terminated'),
        # An unquoted value ends at whitespace; what follows is unexpected.
        ("name==a b", "filters: parse error: [name==a >| |< b]: unexpected input:  "),
        ("name==a ", "filters: parse error: [name==a >| |< ]: unexpected input:  "),
        ('name=="a"b', 'filters: parse error: [name=="a" >|b|< ]: unexpected input: b'),
        ("name==.x", "filters: parse error: [name== >|.|< x]: expected value or quoted"),
        ("name,,x", "filters: parse error: [name, >|,|< x]: expected field or quoted"),
        ("foo\x00bar", "filters: parse error: [foo >|\x00|< bar]: unexpected null"),
        ("labels.\ufffd", "filters: parse error: [labels. >|\ufffd|< ]: rune error"),
        ("name~=[", "filters: parse error: [name~= >|[|< ]: error parsing regexp: missing closing ]: `[`"),
        (
            "name~=/a(b/",
            "filters: parse error: [name~= >|/|< a(b/]: error parsing regexp: missing closing ): `a(b`",
        ),
    ],
)
def test_parse_errors(text: str, message: str) -> None:
    with pytest.raises(errdefs.InvalidArgument) as info:
        filters.parse(text)
    assert info.value.context == message
    assert str(info.value) == message + ": invalid argument"
    with pytest.raises(errdefs.InvalidArgument):
        filters.parse_all("name==ok", text)


def selectors(text: str) -> tuple[Selector, ...]:
    (alternative,) = filters.parse(text).alternatives
    return alternative


def test_structure_is_public() -> None:
    assert selectors('name==foo,labels."containerd.io/gc.root",labels.a.b!=x,digest~=^sha256:') == (
        Selector(("name",), Operator.EQUAL, "foo"),
        Selector(("labels", "containerd.io/gc.root")),
        Selector(("labels", "a", "b"), Operator.NOT_EQUAL, "x"),
        Selector(("digest",), Operator.MATCHES, "^sha256:"),
    )
    f = filters.parse_all("name==a", "name==b,labels.x")
    assert f.alternatives == (
        (Selector(("name",), Operator.EQUAL, "a"),),
        (Selector(("name",), Operator.EQUAL, "b"), Selector(("labels", "x"))),
    )
    assert not f.matches_all
    assert str(Operator.MATCHES) == "~="


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # Unquoted values run to whitespace or comma and may hold = : / . - etc.
        ("a==b=c:d/e.f-g_h@i+j", "b=c:d/e.f-g_h@i+j"),
        ('a==b"c', 'b"c'),
        ("a==sha256:0123abcd", "sha256:0123abcd"),
        ("a==牛", "牛"),
        ("a==1", "1"),
        ('a==""', ""),
        ('a=="too complex, yo"', "too complex, yo"),
        ('a=="tab\\there"', "tab\there"),
        ('a=="\\x41\\101\\u00e9\\U0001F600\\a\\b\\f\\n\\r\\v\\\\\\""', 'AAé😀\a\b\f\n\r\v\\"'),
        ('a=="\\ud800"', "\ufffd"),
        ('a=="\\xff"', "\ufffd"),
        ("a==`x`", "`x`"),
        ("a==x'y'", "x'y'"),
        # Whitespace is allowed before tokens.
        ("  a  ==  b", "b"),
        ("\ta\t==\tb", "b"),
    ],
)
def test_values(text: str, expected: str) -> None:
    (selector,) = selectors(text)
    assert selector.fieldpath == ("a",)
    assert selector.op is Operator.EQUAL
    assert selector.value == expected


def test_alternative_quotes_for_regexp() -> None:
    (s,) = selectors("a~=/x\\/y/")
    assert s.value == "x/y"
    (s,) = selectors("a~=|x/y|")
    assert s.value == "x/y"
    (s,) = selectors("a~=|x\\|y|")
    assert s.value == "x|y"
    (s,) = selectors('a~="x/y"')
    assert s.value == "x/y"
    with pytest.raises(errdefs.InvalidArgument, match="illegal escape sequence"):
        filters.parse('a~=/x\\"y/')


@pytest.mark.parametrize(
    ("text", "fieldpath"),
    [
        ("name", ("name",)),
        ("n", ("n",)),
        ("labels.foo-bar", ("labels", "foo-bar")),
        ("labels.foo_bar.baz", ("labels", "foo_bar", "baz")),
        ("labels.1", ("labels", "1")),
        ("labels.containerd.io", ("labels", "containerd", "io")),
        ('labels."containerd.io/gc.ref.content.m.0"', ("labels", "containerd.io/gc.ref.content.m.0")),
        ('"leading quote".postquote', ("leading quote", "postquote")),
        ('labels."with space"', ("labels", "with space")),
        ('labels.""', ("labels", "")),
    ],
)
def test_fieldpaths(text: str, fieldpath: tuple[str, ...]) -> None:
    (selector,) = selectors(text)
    assert selector == Selector(fieldpath)


def test_empty_matches_everything() -> None:
    nothing = filters.adaptor_from_mapping({}, {})
    for f in (filters.parse(""), filters.parse_all(), filters.parse_all(""), filters.ALWAYS):
        assert f.matches_all
        assert f.match(nothing)
    # Any empty string among several makes the whole OR match everything.
    f = filters.parse_all("name==x", "")
    assert f.matches_all
    assert f.match(nothing)
    # A filter without alternatives matches nothing.
    assert not Filter(()).match(nothing)
    assert not Filter(()).matches_all


def test_parse_all_is_or() -> None:
    f = filters.parse_all("name==foo", "labels.bar")
    assert select(f) == [0, 2, 3]
    f = filters.parse_all("name==foo,labels.foo==true", "name==bazo")
    assert select(f) == [0, 7]


def test_operators_and_presence() -> None:
    a = filters.adaptor_from_mapping({"name": "x", "empty": ""}, {"k": "v", "e": ""})

    def m(text: str) -> bool:
        return filters.parse(text).match(a)

    assert m("name")
    assert m("empty")  # present in the mapping
    assert not m("missing")
    assert m("labels.k")
    assert m("labels.e")
    assert not m("labels.missing")
    assert m("name==x")
    assert not m("name==y")
    assert not m('missing==""')  # == needs presence
    assert m('empty==""')
    assert m("name!=y")
    assert not m("name!=x")
    assert m("missing!=y")  # != matches an absent field...
    assert not m('missing!=""')  # ...unless compared with "" (absent reads "")
    assert m("labels.k==v,name==x")
    assert not m("labels.k==v,name==y")


def test_regexp_matching() -> None:
    a = filters.adaptor_from_mapping({"name": "docker.io/library/busybox:1.36"}, {})

    def m(text: str) -> bool:
        return filters.parse(text).match(a)

    assert m("name~=busybox")  # search, not full match
    assert m("name~=^docker")
    assert not m("name~=^library")
    assert m("name~=/:1[.]36$/")
    assert m("name~=:1\\.36$")  # unquoted values keep backslashes as they are
    assert m("name~=|^docker.io/.*$|")
    assert not m("name~=BUSYBOX")
    assert m("name~=(?i)BUSYBOX")
    assert m("missing~=^$")  # an absent field reads ""
    assert not m('missing~="."')  # an unquoted value cannot start with "."
    with pytest.raises(errdefs.InvalidArgument, match="expected value or quoted"):
        filters.parse("missing~=.")


def test_quoted_regexp_backslash_escapes_are_illegal() -> None:
    # containerd's scanner only knows Go string escapes, so \. inside quotes fails.
    with pytest.raises(errdefs.InvalidArgument, match="illegal escape sequence"):
        filters.parse("name~=/a\\.b/")
    (s,) = selectors('name~="a\\\\.b"')
    assert s.value == "a\\.b"


def test_regexp_compile_error_is_invalid_argument() -> None:
    for text in ("a~=(", "a~=[z-a]", "a~=a**", "a~=\\1", "a~=(?=x)"):
        with pytest.raises(errdefs.InvalidArgument, match="error parsing regexp"):
            filters.parse(text)
    with pytest.raises(errdefs.InvalidArgument):
        Selector(("a",), Operator.MATCHES, "(")


def test_selector_regex_property() -> None:
    (s,) = selectors("a~=^x$")
    assert s.regex is not None
    assert s.regex.pattern == "^x$"
    assert s.regex.matches("x")
    assert not s.regex.matches("x\n")  # Go's $ without (?m) is the very end
    (s,) = selectors("a==x")
    assert s.regex is None


def test_adaptor_from_mapping() -> None:
    a = filters.adaptor_from_mapping({"digest": "sha256:ab", "labels": "ignored"}, {"a.b": "1", "": "root"})
    assert a(["digest"]) == ("sha256:ab", True)
    assert a(["size"]) == ("", False)
    assert a(["digest", "x"]) == ("", False)
    assert a(["labels", "a", "b"]) == ("1", True)
    assert a(["labels", "a.b"]) == ("1", True)
    assert a(["labels", "a"]) == ("", False)
    assert a(["labels"]) == ("root", True)
    assert a([]) == ("", False)
    f = filters.parse('labels."a.b"==1,labels.a.b==1,digest~=^sha256:')
    assert f.match(a)


# --------------------------------------------------------------------------
# Go regexp syntax


def search(pattern: str, text: str) -> bool:
    return filters.compile_regexp(pattern).matches(text)


@pytest.mark.parametrize(
    ("pattern", "text", "expected"),
    [
        # $ and \z are the very end unless (?m).
        ("a$", "a", True),
        ("a$", "a\n", False),
        ("a\\z", "a\n", False),
        ("(?m)a$", "a\nb", True),
        ("(?m)^b", "a\nb", True),
        ("^b", "a\nb", False),
        ("\\Aa", "a", True),
        # Perl classes and \b are ASCII.
        ("^\\d+$", "0123456789", True),
        ("\\d", "٣", False),
        ("^\\w+$", "abc_XYZ_09", True),
        ("\\w", "é", False),
        ("\\W", "é", True),
        ("\\s", "\v", False),
        ("\\s", "\t", True),
        ("\\S", "\u00a0", True),
        ("\\bfoo\\b", "a foo b", True),
        ("\\bfoo\\b", "éfooé", True),
        ("\\Bfoo", "afoo", True),
        ("[\\d]", "5", True),
        ("[\\D]", "5", False),
        ("[^\\d]", "٣", True),
        ("[\\s\\w]", "-", False),
        # POSIX classes.
        ("^[[:alpha:]]+$", "abcXYZ", True),
        ("[[:alpha:]]", "1", False),
        ("[[:^alpha:]]", "1", True),
        ("[[:punct:]]", "!", True),
        ("[[:xdigit:]]+$", "0fF", True),
        ("[[:upper:][:digit:]]", "a", False),
        # Literal brackets and set-operator look-alikes in classes.
        ("[[]", "[", True),
        ("[]a]", "]", True),
        ("[^]a]", "]", False),
        ("[a-]", "-", True),
        ("[a&&b]", "&", True),
        ("[~~]", "~", True),
        ("[|a||]", "|", True),
        # Escapes.
        ("\\101", "A", True),
        ("\\0", "\x00", True),
        ("\\x41", "A", True),
        ("\\x{263a}", "☺", True),
        ("\\x{1F600}", "😀", True),
        ("\\.", ".", True),
        ("\\.", "a", False),
        ("\\_", "_", True),
        ("\\t\\n\\r\\f\\v\\a", "\t\n\r\f\v\a", True),
        ("\\Qa.b\\E", "a.b", True),
        ("\\Qa.b\\E", "axb", False),
        ("\\Qab\\E{2}", "abb", True),
        ("\\Qa.b", "a.b", True),
        # { without a valid repeat is literal.
        ("x{,3}", "x{,3}", True),
        ("x{,3}", "xxx", False),
        ("x{01}", "x{01}", True),
        ("x{2}", "xx", True),
        ("^x{2,}$", "xxxx", True),
        ("^x{2,3}$", "xxxx", False),
        ("a}", "a}", True),
        # Flags, also mid-pattern and scoped.
        ("(?i)abc", "ABC", True),
        ("a(?i)bc", "aBC", True),
        ("a(?i)bc", "ABC", False),
        ("a(?i)b|c", "C", True),
        ("a(?i)b|c", "aB", True),
        ("(?i:a)b", "Ab", True),
        ("(?i:a)b", "AB", False),
        ("(?i)a(?-i)b", "Ab", True),
        ("(?i)a(?-i)b", "AB", False),
        ("(?i)(a(?-i)b)c", "AbC", True),
        ("(?i)(a(?-i)b)c", "ABC", False),
        ("(?s).", "\n", True),
        (".", "\n", False),
        ("(?s:.)x", "\nx", True),
        ("(?U)^a+", "aaa", True),
        ("(?:ab)+", "abab", True),
        ("(?P<name>a)(?<other>b)", "ab", True),
        # Anchors can be repeated in Go.
        ("^*a", "a", True),
        ("(?:)", "", True),
        ("", "anything", True),
    ],
)
def test_go_regexp_semantics(pattern: str, text: str, expected: bool) -> None:
    assert search(pattern, text) is expected


def test_ungreedy_flag() -> None:
    assert filters.compile_regexp("(?U)a+").find("aaa") == "a"
    assert filters.compile_regexp("(?U)a+?").find("aaa") == "aaa"
    assert filters.compile_regexp("a{1,3}").find("aaa") == "aaa"
    assert filters.compile_regexp("(?U)a{1,3}").find("aaa") == "a"
    assert filters.compile_regexp("a+?").find("aaa") == "a"
    assert filters.compile_regexp("b").find("aaa") is None


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("(", "missing closing ): `(`"),
        (")", "unexpected ): `)`"),
        ("[a", "missing closing ]: `[a`"),
        ("[z-a]", "invalid character class range: `z-a`"),
        ("[[:foo:]]", "invalid character class range: `[:foo:]`"),
        ("*", "missing argument to repetition operator: `*`"),
        ("a|*", "missing argument to repetition operator: `*`"),
        ("(*)", "missing argument to repetition operator: `*`"),
        # Go quotes both operators (the old translator quoted the second only).
        ("a**", "invalid nested repetition operator: `**`"),
        ("a*+", "invalid nested repetition operator: `*+`"),
        ("a*?+", "invalid nested repetition operator: `*?+`"),
        ("a{2}{3}", "invalid nested repetition operator: `{2}{3}`"),
        ("a{1001}", "invalid repeat count: `{1001}`"),
        ("a{3,2}", "invalid repeat count: `{3,2}`"),
        ("(?=a)", "invalid or unsupported Perl syntax: `(?=`"),
        ("(?!a)", "invalid or unsupported Perl syntax: `(?!`"),
        ("(?#c)", "invalid or unsupported Perl syntax: `(?#`"),
        ("(?>a)", "invalid or unsupported Perl syntax: `(?>`"),
        ("(?P=n)", "invalid or unsupported Perl syntax: `(?P`"),
        ("(?-)", "invalid or unsupported Perl syntax: `(?-)`"),
        ("(?i", "invalid or unsupported Perl syntax: `(?i`"),
        ("(?<=a)b", "invalid named capture: `(?<=a)b`"),
        ("(?P<a-b>x)", "invalid named capture: `(?P<a-b>`"),
        ("(a)\\1", "invalid escape sequence: `\\1`"),
        ("\\Z", "invalid escape sequence: `\\Z`"),
        ("\\C", "invalid escape sequence: `\\C`"),
        ("\\8", "invalid escape sequence: `\\8`"),
        ("\\q", "invalid escape sequence: `\\q`"),
        ("\\é", "invalid escape sequence: `\\é`"),
        ("[\\b]", "invalid escape sequence: `\\b`"),
        ("\\x4", "invalid escape sequence: `\\x4`"),
        ("\\x{}", "invalid escape sequence: `\\x{}`"),
        ("\\x{110000}", "invalid escape sequence"),
        ("a\\", "trailing backslash at end of expression: ``"),
    ],
)
def test_go_regexp_errors(pattern: str, message: str) -> None:
    with pytest.raises(errdefs.InvalidArgument) as info:
        filters.compile_regexp(pattern)
    assert info.value.context.startswith("error parsing regexp: ")
    assert message in info.value.context


# --------------------------------------------------------------------------
# RE2 runs what Go accepts, as Go does (each case checked against Go 1.19's regexp)


@pytest.mark.parametrize(
    ("pattern", "text", "found"),
    [
        # Unicode classes (the Python translator rejected them).
        ("\\pL", "é", "é"),
        ("\\pL", "1", None),
        ("^\\p{Greek}+$", "\u03b1\u03b2\u03b3", "\u03b1\u03b2\u03b3"),
        ("\\PL", "1", "1"),
        ("\\PL", "é", None),
        ("^[\\p{Greek}\\d]+$", "\u03b11\u03b22", "\u03b11\u03b22"),
        ("\\p{^Greek}", "\u03b1", None),
        ("\\P{^Greek}", "\u03b1", "\u03b1"),
        ("\\pN", "٣", "٣"),
        ("\\p{Nd}", "٣", "٣"),
        ("\\p{Lu}", "a", None),
        ("(?i)\\p{Lu}", "a", "a"),
        ("\\p{Any}", "\n", "\n"),
        ("\\p{Han}", "漢", "漢"),
        # Case folding is Unicode's simple folding.
        ("(?i)k", "\u212a", "\u212a"),
        ("(?i)\u03c3", "\u03c2", "\u03c2"),
        ("(?i)\u03a3", "\u03c2", "\u03c2"),
        ("(?i)ǆ", "ǅ", "ǅ"),
        ("(?i)straße", "STRASSE", None),
        # Anchors.
        ("^a$", "a\n", None),
        ("(?m)^b$", "a\nb\nc", "b"),
        ("(?m)a$", "a\n", "a"),
        ("\\Aa\\z", "a", "a"),
        ("(?m)\\Aa", "b\na", None),
        # Leftmost-first, non-greedy and ungreedy.
        ("a|ab", "ab", "a"),
        ("a+?", "aaa", "a"),
        ("a.*?b", "axxbyyb", "axxb"),
        ("(?U)a.*b", "axxbyyb", "axxb"),
        ("(?U)a.*?b", "axxbyyb", "axxbyyb"),
        # Runes, not bytes; Perl classes and \b stay ASCII.
        ("^.$", "é", "é"),
        ("^..$", "é", None),
        ("\\x{e9}", "é", "é"),
        ("[é-ê]", "ê", "ê"),
        ("^\\w$", "é", None),
        ("\\bé", "aé", "é"),
        ("[[:^ascii:]]", "é", "é"),
        ("[^a]", "\n", "\n"),
        # What Go accepts and Python's re did not, or the translator rejected.
        ("a(?i)*", "aaa", "aaa"),  # a flag group pushes nothing: * repeats the a
        ("a*\\Q\\E*", "aaa", "aaa"),  # an empty \Q\E ends the repetition run
        ("(?P<n>a)(?P<n>b)", "ab", "ab"),  # Go allows duplicate group names
        ("(a*){1000}", "", ""),
        ("((a{10}){10}){10}", "a" * 1000, "a" * 1000),
    ],
)
def test_go_regexp_runs_as_in_go(pattern: str, text: str, found: str | None) -> None:
    r = filters.compile_regexp(pattern)
    assert r.find(text) == found
    assert r.matches(text) is (found is not None)


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("\\C", "invalid escape sequence: `\\C`"),  # RE2 alone would accept \C (any byte)
        ("[\\C]", "invalid escape sequence: `\\C`"),
        ("\\p{Foo}", "invalid character class range: `\\p{Foo}`"),
        ("\\pX", "invalid character class range: `\\pX`"),
        ("a\\p{Gre", "invalid character class range: `\\p{Gre`"),
        ("[\\p]", "invalid character class range: `\\p]`"),
        ("\\p{^^L}", "invalid character class range: `\\p{^^L}`"),
        ("\\p{}", "invalid character class range: `\\p{}`"),
        ("\\p", "invalid character class range: `\\p`"),
        # Nested counted repetitions may not expand past 1000 copies.
        ("(a{100}){11}", "invalid repeat count: `{11}`"),
        ("(a{100}){11}?", "invalid repeat count: `{11}?`"),
        ("((a{10}){10}){11}", "invalid repeat count: `{11}`"),
        ("(a{2}|b{600}){2}", "invalid repeat count: `{2}`"),
        ("a*{1001}", "invalid repeat count: `{1001}`"),  # the count is checked first
        ("*?", "missing argument to repetition operator: `*?`"),
        ("(?i)*", "missing argument to repetition operator: `*`"),
        ("\\Q\\E*", "missing argument to repetition operator: `*`"),
        ("x{0,}{2}", "invalid nested repetition operator: `{0,}{2}`"),
        ("(a{0}){1000}{1}", "invalid nested repetition operator: `{1000}{1}`"),
        ("a**{2}", "invalid nested repetition operator: `**`"),
        ("\\x{", "invalid escape sequence: `\\x{`"),
    ],
)
def test_go_regexp_error_messages(pattern: str, message: str) -> None:
    with pytest.raises(errdefs.InvalidArgument) as info:
        filters.compile_regexp(pattern)
    assert info.value.context == "error parsing regexp: " + message


def test_regexp_errors_inside_filters_keep_containerd_form() -> None:
    with pytest.raises(errdefs.InvalidArgument) as info:
        filters.parse("name~=/\\\\p{Foo}/")
    assert info.value.context == (
        "filters: parse error: [name~= >|/|< \\\\p{Foo}/]: "
        "error parsing regexp: invalid character class range: `\\p{Foo}`"
    )
    assert filters.parse("name~=\\pL").match(filters.adaptor_from_mapping({"name": "é"}, {}))


def test_regexp_value_with_lone_surrogate_does_not_crash() -> None:
    # Not from the wire (protobuf strings are valid UTF-8), but never an exception.
    r = filters.compile_regexp("b$")
    assert r.matches("a\ud800b")
    assert r.find("a\ud800b") == "b"


# --------------------------------------------------------------------------
# Cost bounds


def bound_error(*texts: str) -> str:
    with pytest.raises(errdefs.InvalidArgument) as info:
        filters.parse_all(*texts)
    return info.value.context


def test_filter_length_bound() -> None:
    fits = "name==" + "a" * (filters.MAX_FILTER_LENGTH - 6)
    assert filters.parse(fits).match(filters.adaptor_from_mapping({"name": fits[6:]}, {}))
    message = bound_error(fits + "a")
    assert message == (
        f"filters: filter longer than {filters.MAX_FILTER_LENGTH} bytes ({filters.MAX_FILTER_LENGTH + 1}): "
        + '"name=='
        + "a" * (limits.ECHO_CHARS - 6)
        + f'"…({filters.MAX_FILTER_LENGTH + 1} characters)'
    )
    # bytes, not characters
    message = bound_error("name==" + "é" * (filters.MAX_FILTER_LENGTH // 2))
    assert message.startswith(f"filters: filter longer than {filters.MAX_FILTER_LENGTH} bytes (")
    assert len(message) < 200


def test_regexp_length_bound() -> None:
    pattern = "a" * filters.MAX_REGEXP_LENGTH
    assert filters.parse(f"name~={pattern}").match(filters.adaptor_from_mapping({"name": pattern}, {}))
    message = bound_error(f"name~={pattern}b")
    # not wrapped with the position: the message quotes only the start of the pattern
    assert message == (
        f"filters: error parsing regexp: expression longer than {filters.MAX_REGEXP_LENGTH} bytes "
        f"({filters.MAX_REGEXP_LENGTH + 1}): `"
        + "a" * limits.ECHO_CHARS
        + f"…({filters.MAX_REGEXP_LENGTH + 1} characters)`"
    )
    with pytest.raises(errdefs.InvalidArgument, match="expression longer than"):
        filters.compile_regexp("é" * (filters.MAX_REGEXP_LENGTH // 2 + 1))


def test_regexp_program_bound() -> None:
    filters.compile_regexp("\\pL\\pL")  # about 2400 instructions
    for pattern in ("\\pL{3}", "(?s).{500}", "[\\p{L}\\p{N}]{100}"):
        with pytest.raises(errdefs.InvalidArgument) as info:
            filters.compile_regexp(pattern)
        assert info.value.context == f"error parsing regexp: expression too large: `{pattern}`"
    assert bound_error("a~=\\pL{3}") == "filters: error parsing regexp: expression too large: `\\pL{3}`"
    long = "(?s)" + "." * 600  # 600 UTF-8 automata
    assert bound_error(f"a~={long}") == (
        "filters: error parsing regexp: expression too large: `"
        + long[: limits.ECHO_CHARS]
        + f"…({len(long)} characters)`"
    )


def test_selector_bounds_hold_for_all_filters_of_a_call() -> None:
    assert filters.MAX_SELECTORS == 64
    assert filters.MAX_REGEXPS == 4
    filters.parse(",".join(f"l{i}" for i in range(filters.MAX_SELECTORS)))
    assert bound_error(",".join(f"l{i}" for i in range(65))) == "filters: more than 64 selectors"
    assert bound_error(*(["a==b,c"] * 32), "x") == "filters: more than 64 selectors"
    assert bound_error(*([""] * 63), "x,y") == "filters: more than 64 selectors"
    assert bound_error(*([""] * 65)) == "filters: more than 64 filters (65)"
    filters.parse_all("a~=x,b~=y", "c~=z,d~=w")
    assert bound_error("a~=x,b~=y", "c~=z,d~=w,e~=v") == "filters: more than 4 regexp (~=) selectors"


def test_long_values_never_match() -> None:
    r = filters.compile_regexp("a")
    assert r.matches("a" * filters.MAX_REGEXP_INPUT)
    assert not r.matches("a" * (filters.MAX_REGEXP_INPUT + 1))
    assert not r.matches("é" * (filters.MAX_REGEXP_INPUT // 2 + 1))  # bytes, not characters
    assert r.find("a" * (filters.MAX_REGEXP_INPUT + 1)) is None
    f = filters.parse("labels.x~=a")
    assert not f.match(filters.adaptor_from_mapping({}, {"x": "a" * (filters.MAX_REGEXP_INPUT + 1)}))


def test_has_regexp() -> None:
    assert filters.parse_all("a==b", "c~=d").has_regexp
    assert not filters.parse_all("a==b", "c").has_regexp
    assert not filters.ALWAYS.has_regexp
