"""``~=`` regexps against Go's own ``regexp`` package (needs the ``go`` toolchain).

A small Go program compiles each pattern with ``regexp.Compile`` and reports the
error, or the leftmost match (``FindStringIndex``) in a text. ctrd must give the
same error text, or the same match, for thousands of generated patterns. The
only differences allowed are ctrd's bounds (``expression too large``); patterns
holding ``(?<`` are left out (Go before 1.22, like the toolchain here, rejects
``(?<name>re)``, which ctrd accepts as newer Go does).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
from pathlib import Path

import pytest

from ctrd import errdefs, filters

pytestmark = pytest.mark.skipif(shutil.which("go") is None, reason="needs the go toolchain (golang-go)")

ORACLE = """\
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"unicode"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "names" {
		for name := range unicode.Categories {
			fmt.Println(name)
		}
		for name := range unicode.Scripts {
			fmt.Println(name)
		}
		return
	}
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1<<20), 1<<24)
	for in.Scan() {
		var r struct{ P, T string }
		if err := json.Unmarshal(in.Bytes(), &r); err != nil {
			panic(err)
		}
		out := map[string]interface{}{}
		if re, err := regexp.Compile(r.P); err != nil {
			out["err"] = err.Error()
		} else if loc := re.FindStringIndex(r.T); loc != nil {
			out["found"] = r.T[loc[0]:loc[1]]
		} else {
			out["found"] = nil
		}
		b, _ := json.Marshal(out)
		fmt.Println(string(b))
	}
}
"""

TOKENS = (  # noqa: SIM905 (one token per word reads better than a list)
    "a b é x P < > { } ( ) | * + ? *? - ^ $ . [ ] [^ \\ (?: (?i) (?i: (?P<n> (?P< (?s-i) (?U) "
    "(?m) (? (?- (?= (?! (?# {2} {2,} {1,3} {0} {0,} {10} {100} {1001} {,2} {3,2} \\d \\D \\w "
    "\\s \\b \\B \\A \\z \\Z \\C \\Q \\E \\pL \\PL \\pN \\p{Greek} \\p{^Greek} \\p{Foo} \\p{ "
    "\\P \\x41 \\x{263a} \\x{10FFFF} \\x{110000} \\x{ \\x \\1 \\0 \\08 \\123 \\8 \\_ \\q \\n "
    "\\t [:alpha:] [:foo:] [[: :] a-z z-a"
).split()
TEXTS = ("", "a", "ab", "aab", "é", "abcé\n", "A", "\u03b1\u03b2\u03b3", "x{2}", "\n", "[", "]", "-", "aaa")
TEXTS += ("Zz09_", "☺", "P<n>")


@pytest.fixture(scope="module")
def go_regexp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = tmp_path_factory.mktemp("oracle")
    (src / "main.go").write_text(ORACLE)
    (src / "go.mod").write_text("module oracle\n\ngo 1.19\n")
    env = dict(os.environ, GOFLAGS="-mod=mod", GOPROXY="off", GOCACHE=str(src / "cache"))
    subprocess.run(["go", "build", "-o", "oracle", "."], cwd=src, env=env, check=True, timeout=300)
    return src / "oracle"


def ask_go(oracle: Path, cases: list[tuple[str, str]]) -> list[dict[str, object]]:
    lines = "".join(json.dumps({"P": p, "T": t}) + "\n" for p, t in cases)
    out = subprocess.run([oracle], input=lines, capture_output=True, text=True, check=True, timeout=120)
    return [json.loads(line) for line in out.stdout.splitlines()]


def ask_ctrd(pattern: str, text: str) -> dict[str, object]:
    try:
        r = filters.compile_regexp(pattern)
    except errdefs.InvalidArgument as exc:
        return {"err": exc.context}
    return {"found": r.find(text)}


def test_generated_patterns_agree_with_go(go_regexp: Path) -> None:
    rnd = random.Random(20240614)
    cases: list[tuple[str, str]] = []
    while len(cases) < 12000:
        pattern = "".join(rnd.choice(TOKENS) for _ in range(rnd.randint(1, 7)))
        if "(?<" not in pattern:
            cases.extend((pattern, text) for text in rnd.sample(TEXTS, 3))
    accepted = 0
    mismatches = []
    for (pattern, text), go in zip(cases, ask_go(go_regexp, cases), strict=True):
        ours = ask_ctrd(pattern, text)
        accepted += "err" not in go
        if ours != go and "expression too large" not in str(ours.get("err")):
            mismatches.append((pattern, text, go, ours))
    assert mismatches == []
    assert accepted > 2000  # the corpus exercises matching, not only errors


def test_explicit_cases_agree_with_go(go_regexp: Path) -> None:
    cases = [
        ("(a{100}){11}?", ""),
        ("((a{10}){10}){10}", "a" * 1000),
        ("(?i)\\p{Lu}+", "abc"),
        ("(?i)k", "\u212a"),
        ("a|ab", "ab"),
        ("(?m)^b$", "a\nb\nc"),
        ("^(a+)+$", "a" * 40 + "b"),
        ("\\x{e9}+", "ééé"),
    ]
    assert [ask_ctrd(p, t) for p, t in cases] == ask_go(go_regexp, cases)


def test_every_unicode_class_go_knows_is_accepted(go_regexp: Path) -> None:
    out = subprocess.run([go_regexp, "names"], capture_output=True, text=True, check=True, timeout=60)
    names = out.stdout.split()
    assert len(names) > 150
    refused = []
    for name in names:
        try:
            filters.compile_regexp(f"\\p{{{name}}}")
        except errdefs.InvalidArgument:
            refused.append(name)
    assert refused == []
