"""Fuzzed endpoint files: parse_config returns a Config or raises ConfigError, nothing else.

Every problem is one non-empty line; every call is fast and small in memory, whatever the
input: random structure, wrong types, odd Unicode, huge strings, explicit tags, anchors and
aliases (a billion-laughs bomb among them), deep nesting, binary garbage.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from availability_exporter.config import (
    ALLOWED_KEYS,
    Config,
    ConfigError,
    Defaults,
    parse_config,
)

pytestmark = pytest.mark.timeout(120)

DEFAULTS = Defaults()
SOURCE = "fuzz.yaml"
# Per call; generous for a loaded CI machine, far below anything pathological.
CALL_SECONDS = 1.0


def fuzz(examples: int) -> settings:
    """Hypothesis settings: ``examples`` documents, each parsed within CALL_SECONDS."""
    return settings(
        max_examples=examples,
        deadline=CALL_SECONDS * 1000,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


def check(data: bytes) -> Config | ConfigError:
    """Parse ``data``; fail the test unless the outcome is a Config or a well-formed error."""
    started = time.perf_counter()
    try:
        config = parse_config(data, SOURCE, DEFAULTS)
    except ConfigError as exc:
        outcome: Config | ConfigError = exc
        assert exc.problems, "a ConfigError without problems"
        for problem in exc.problems:
            assert isinstance(problem, str) and problem.strip(), repr(problem)
            assert len(problem.splitlines()) == 1, f"not a single line: {problem!r}"
            assert problem.startswith(SOURCE), f"does not name the file: {problem!r}"
        assert str(exc) == "\n".join(exc.problems)
    else:
        outcome = config
        assert isinstance(config, Config) and config.endpoints
    elapsed = time.perf_counter() - started
    assert elapsed < CALL_SECONDS, f"took {elapsed:.2f}s"
    return outcome


# -- strategies ------------------------------------------------------------------------------

# Text that YAML and the validators find awkward: controls, BOMs, line and paragraph
# separators, right-to-left marks, astral characters, combining marks, ${...} references.
ODD_TEXT = st.one_of(
    st.text(max_size=40),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=40),
    st.sampled_from([
        "", " ", "\t", "\n", "\r\n", "\x00", "\x85", "\u2028", "\u2029", "\ufeff", "\u202e",
        "\U0001f600", "e\u0301", "${HOME}", "${}", "${1X}", "${UNSET_FUZZ_VAR}", "~", "null",
        "yes", "No", "0x1F", "0o17", "1_000", "1:30", ".inf", "-.nan", "2001-12-14",
        "http://", "https://[::1]:99999/", "http://user:pw@host/", "ftp://x/", "http://[::1/",
        "http://a b/", "http://\u2603.com/", "http://xn--a.com/", "HTTP://EXAMPLE.COM./",
        "'", '"', "&a", "*a", "!!int", "<<", "? ", "- ", ": ", "#", "%YAML 1.1",
    ]),
)

SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    # Past float range, but within str(int)'s 4,300 digits (TOKENS has a longer one).
    st.integers(min_value=-(10**1000), max_value=10**1000),
    st.floats(allow_nan=True, allow_infinity=True),
    ODD_TEXT,
    st.binary(max_size=20),
)


def _plain(value: Any) -> Any:
    """Bytes become text: safe_dump would write them as !!binary, which is another case."""
    return value.decode("latin-1") if isinstance(value, bytes) else value


VALUES = st.recursive(
    SCALARS.map(_plain),
    lambda children: st.one_of(
        st.lists(children, max_size=5),
        st.dictionaries(st.one_of(ODD_TEXT, st.integers(), st.booleans()), children,
                        max_size=5),
    ),
    max_leaves=12,
)

URLS = st.one_of(
    ODD_TEXT,
    st.builds(lambda scheme, host, rest: f"{scheme}://{host}{rest}",
              st.sampled_from(["http", "https", "HTTP", "ftp", ""]),
              st.one_of(st.sampled_from(["example.com", "127.0.0.1", "[::1]", "h:80",
                                         "u:p@h", "h:0", "h:65536", ""]), ODD_TEXT),
              ODD_TEXT),
)

# Long runs of one character, up to a few hundred kilobytes (the 10 MB ones are explicit cases).
HUGE = st.builds(lambda char, size: char * size,
                 st.sampled_from(["a", "é", "\U0001f600", " ", "%", "9", "\\", "${"]),
                 st.integers(1_000, 300_000))
HUGE_URLS = st.builds(lambda prefix, huge: prefix + huge,
                      st.sampled_from(["http://", "http://h/", "https://h:1/?q=", "http://u:"]),
                      HUGE)

# Regexes, JMESPath and cron expressions that go wrong in their own ways.
PATTERNS = st.one_of(ODD_TEXT, st.sampled_from([
    "(", "[", "a{99999999999}", "(?P<x>a)(?P<x>b)", "\\", "(a+)+$", "$.status", "a[",
    "checks[?name=='db'].status | [0]", "length(@)", "`{}`", "@", "*", "foo.\"bar\"",
]))
CRONS = st.one_of(ODD_TEXT, st.sampled_from([
    "0 2 * * 0", "61 2 * * 0", "* * * *", "0 0 31 2 *", "@daily", "@reboot", "*/0 * * * *",
    "0 2 * * 8", "0 0 0 0 0", "1-99999999 * * * *", "0 2 * * sun", "0 0 29 2 *",
]))
EXPECT_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "status": st.one_of(st.lists(st.one_of(st.integers(0, 700), st.sampled_from(
        ["2xx", "3XX", "6xx", "xx", "200"])), max_size=4), VALUES),
    "body_contains": st.one_of(ODD_TEXT, st.lists(ODD_TEXT, max_size=3), VALUES),
    "body_not_contains": st.one_of(ODD_TEXT, VALUES),
    "body_regex": st.one_of(PATTERNS, st.lists(PATTERNS, max_size=3), VALUES),
    "body_not_regex": st.one_of(PATTERNS, VALUES),
    "json": st.one_of(st.lists(st.fixed_dictionaries({}, optional={
        "path": st.one_of(PATTERNS, VALUES), "equals": VALUES,
        "matches": st.one_of(PATTERNS, VALUES), "exists": st.one_of(st.booleans(), VALUES),
        "other": VALUES}), max_size=3), VALUES),
    "headers": st.one_of(st.dictionaries(ODD_TEXT, st.one_of(PATTERNS, VALUES), max_size=3),
                         VALUES),
    "max_body_bytes": st.one_of(st.integers(), st.floats(), VALUES),
    "bogus": VALUES,
}
WINDOW_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "cron": st.one_of(CRONS, VALUES),
    "duration": st.one_of(st.floats(), st.integers(), VALUES),
    "time_zone": st.one_of(st.sampled_from(["UTC", "Europe/Berlin", "Mars/Olympus", "",
                                            "../etc/passwd", "/etc/localtime", "utc"]),
                           ODD_TEXT, VALUES),
    "start": st.one_of(st.sampled_from(["2026-01-01T00:00:00Z", "2026-01-01", "tomorrow",
                                        "2026-13-01T00:00:00"]), ODD_TEXT, VALUES),
    "end": st.one_of(st.sampled_from(["2026-01-02T00:00:00+01:00", "9999-12-31T23:59:59"]),
                     ODD_TEXT, VALUES),
    "every": VALUES,
}

ENDPOINT_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "name": st.one_of(ODD_TEXT, VALUES, HUGE),
    "url": st.one_of(URLS, VALUES, HUGE_URLS),
    "method": st.one_of(st.sampled_from(["GET", "post", "PATCH", "G ET", ""]), VALUES),
    "headers": st.one_of(st.dictionaries(st.one_of(ODD_TEXT, HUGE),
                                         st.one_of(ODD_TEXT, VALUES, HUGE), max_size=4),
                         VALUES),
    "body": st.one_of(st.just('{"foo":"bar"}'), VALUES, HUGE),
    "timeout": st.one_of(st.floats(), st.integers(), VALUES),
    "latency_threshold": st.one_of(st.floats(), st.integers(), VALUES),
    "follow_redirects": st.one_of(st.booleans(), VALUES),
    "verify_tls": st.one_of(st.booleans(), VALUES),
    "http2": st.one_of(st.booleans(), VALUES),
    "proxy": st.one_of(URLS, VALUES, HUGE_URLS),
    "tls": st.one_of(
        st.dictionaries(st.sampled_from(["ca_file", "cert_file", "key_file", "server_name",
                                         "ca"]),
                        st.one_of(ODD_TEXT, VALUES, st.just("/dev/null")), max_size=4),
        VALUES),
    "ip_family": st.one_of(st.sampled_from(["any", "ipv4", "ipv6", "IPv4", ""]), VALUES),
    "redirect_keep_headers": st.one_of(st.booleans(), VALUES),
    "expect": st.one_of(st.fixed_dictionaries({}, optional=EXPECT_VALUES), VALUES),
    "maintenance": st.one_of(
        st.lists(st.one_of(st.fixed_dictionaries({}, optional=WINDOW_VALUES), VALUES),
                 max_size=3),
        VALUES),
}


@st.composite
def endpoint_items(draw: st.DrawFn) -> dict[Any, Any]:
    """A mapping that is nearly an endpoint: real keys with odd values, plus stray keys."""
    keys = draw(st.lists(st.sampled_from(ALLOWED_KEYS), unique=True, max_size=len(ALLOWED_KEYS)))
    item: dict[Any, Any] = {key: draw(ENDPOINT_VALUES[key]) for key in keys}
    for key in draw(st.lists(st.one_of(ODD_TEXT, st.integers()), max_size=2)):
        item[key] = draw(VALUES)
    return item


ENDPOINT_FILES = st.lists(st.one_of(endpoint_items(), VALUES), min_size=0, max_size=6)

# Fragments that make YAML's scanner and the constructor work: tags with bad values, anchors,
# aliases (defined or not), merge keys, flow and block structure, directives, odd characters.
TOKENS = [
    "- ", "-", ": ", ":", "? ", ", ", "{", "}", "[", "]", "\n", "\n  ", "\n    ", "  ", "\t",
    "name", "url", "headers", "timeout", "verify_tls", "method", "body", "http://h/",
    "https://[::1]:8443/x", "${FUZZ_UNSET}", "&a ", "&b ", "*a", "*b", "*zz", "<<: ", "<<: *a",
    "!!int ", "!!float ", "!!bool ", "!!str ", "!!null ", "!!binary ", "!!timestamp ",
    "!!set ", "!!omap ", "!!python/object:os.system ", "!custom ", "!<tag:x> ", "|", ">-",
    "'", '"', "\\", "#", "%YAML 1.1\n", "%TAG ! tag:x,2000:\n", "---\n", "...\n", "~",
    "true", "maybe", "0x", "1e400", "1" * 5000, ".nan", "-1", "0", "\x00", "\x07", "\ufeff",
    "\u2028", "\x85", "\U0001f600", "é", "a" * 300,
]
TOKEN_SOUP = st.lists(st.sampled_from(TOKENS), max_size=40).map("".join)


def dump(document: Any) -> bytes:
    # The C emitter: the pure-Python one spends a second on a 300 KB string.
    text: str = yaml.dump(document, Dumper=yaml.CSafeDumper, allow_unicode=True)
    return text.encode("utf-8")


# -- property tests ----------------------------------------------------------------------


@fuzz(300)
@given(ENDPOINT_FILES)
def test_endpoint_like_files(document: list[Any]) -> None:
    check(dump(document))


@fuzz(400)
@given(VALUES)
def test_random_structures(document: Any) -> None:
    check(dump(document))


@fuzz(1000)
@given(TOKEN_SOUP)
def test_token_soup(text: str) -> None:
    check(text.encode("utf-8"))


@fuzz(500)
@given(st.text(max_size=200))
def test_random_text(text: str) -> None:
    check(text.encode("utf-8", "surrogatepass"))


@fuzz(500)
@given(st.binary(max_size=300))
def test_random_bytes(data: bytes) -> None:
    check(data)


YAML_TAGS = ["int", "float", "bool", "str", "null", "binary", "timestamp", "set", "omap",
             "pairs", "seq", "map", "merge", "value", "python/object:os.system"]
TAGGED_FILES = st.builds(
    lambda key, tag, text: (
        f"- {{name: n, url: 'http://h/', {key}: !!{tag} {json.dumps(text)}}}\n"
        f"- {{name: m, url: 'http://h/', headers: {{X: !!{tag} {json.dumps(text)}}}}}\n"
    ),
    st.sampled_from(ALLOWED_KEYS), st.sampled_from(YAML_TAGS), ODD_TEXT,
)


@fuzz(500)
@given(TAGGED_FILES)
def test_explicit_tags(text: str) -> None:
    """An explicit tag makes the constructor convert text it would never have resolved."""
    check(text.encode("utf-8"))


NESTING = st.builds(
    lambda opener, closer, depth, closed, inner: opener * depth + inner
    + (closer * depth if closed else ""),
    st.sampled_from(["[", "{a: ", "- ", "[{a: ", "{? "]),
    st.sampled_from(["]", "}", "", "}]", "}"]),
    st.integers(0, 5_000),
    st.booleans(),
    st.sampled_from(["", "x", "{name: n, url: 'http://h/'}", "*a", "&a x"]),
)


@fuzz(150)
@given(NESTING)
def test_deep_nesting(text: str) -> None:
    check(text.encode("utf-8"))


@st.composite
def alias_webs(draw: st.DrawFn) -> str:
    """Anchors that each alias the previous one several times, used where fields belong."""
    levels = draw(st.integers(1, 9))
    width = draw(st.integers(1, 10))
    leaf = draw(st.sampled_from(["lol", "{name: a, url: 'http://h/'}", "[x]", "{k: v}", "1"]))
    lines = [f"- &a0 {leaf}"]
    for level in range(1, levels + 1):
        aliases = ", ".join([f"*a{level - 1}"] * width)
        lines.append(f"- &a{level} [{aliases}]")
    use = f"*a{draw(st.integers(0, levels))}"
    field = draw(st.sampled_from(["name", "url", "headers", "body", "timeout", "method"]))
    lines.append(f"- {{name: n, url: 'http://h/', {field}: {use}}}")
    lines.append(f"- {{headers: {{x: {use}}}, name: m, url: 'http://h/'}}")
    return "\n".join(lines) + "\n"


@fuzz(300)
@given(alias_webs())
def test_anchors_and_aliases(text: str) -> None:
    check(text.encode("utf-8"))


# -- explicit cases --------------------------------------------------------------------------


def billion_laughs() -> bytes:
    """The classic: nine levels of ten aliases each, 10^9 'lol's if anything expanded it."""
    lines = ['- &l0 "lol"']
    for level in range(1, 10):
        lines.append(f"- &l{level} [" + ", ".join([f"*l{level - 1}"] * 10) + "]")
    lines.append("- name: *l9\n  url: *l9\n  headers: {x: *l9}\n  body: *l9")
    lines.append("- name: ok\n  url: http://h/\n  headers: *l9")
    return ("\n".join(lines) + "\n").encode()


def bomb_as_header_mapping() -> bytes:
    """A bomb built from mappings, merged into an endpoint's headers."""
    lines = ["- name: n", "  url: http://h/", "  headers:", "    a0: &m0 {k: lol}"]
    for level in range(1, 10):
        merged = ", ".join(f"k{i}: *m{level - 1}" for i in range(10))
        lines.append(f"    a{level}: &m{level} {{{merged}}}")
    lines.append("- {name: m, url: 'http://h/', headers: {<<: *m9}}")
    return ("\n".join(lines) + "\n").encode()


TEN_MB = 10 * 1024 * 1024
_rng = random.Random(20_261_128)

EXPLICIT: dict[str, bytes] = {
    "billion laughs": billion_laughs(),
    "billion laughs of mappings": bomb_as_header_mapping(),
    "10,000 open brackets": b"[" * 10_000,
    "10,000 nested lists": b"[" * 10_000 + b"]" * 10_000,
    "10,000 nested mappings": b"{a: " * 10_000 + b"}" * 10_000,
    # Indented, 10,000 levels would be a 100 MB file; past 1,000 the limit is the same.
    "2,000 nested block lists": "".join("  " * i + "-\n" for i in range(2_000)).encode(),
    "10 MB name": b"- name: '" + b"n" * TEN_MB + b"'\n  url: http://h/\n",
    "10 MB url": b"- name: n\n  url: 'http://h/" + b"p" * TEN_MB + b"'\n",
    "10 MB host": b"- name: n\n  url: 'http://" + b"h" * TEN_MB + b"/'\n",
    "10 MB header value": b"- {name: n, url: 'http://h/', headers: {X: '" + b"v" * TEN_MB + b"'}}",
    "10 MB timeout": b"- {name: n, url: 'http://h/', timeout: " + b"9" * TEN_MB + b"}",
    "10 MB key": b"- name: n\n  url: http://h/\n  " + b"k" * TEN_MB + b": 1\n",
    "10 MB block scalar": b"- name: n\n  url: http://h/\n  body: |\n" + b"    b\n" * (TEN_MB // 6),
    # Each unclosed "${" must not start a scan to the end of the text (quadratic time).
    "64 KB of unclosed ${ in a body": b"- {name: n, url: 'http://h/', body: '"
    + b"${" * 32_768 + b"'}",
    "64 KB of unclosed ${ in a URL": b"- {name: n, url: 'http://h/" + b"${" * 32_768 + b"'}",
    "binary garbage": _rng.randbytes(64 * 1024),
    "every byte": bytes(range(256)) * 16,
    "NUL bytes": b"\x00" * 1024,
    "UTF-16 with BOM": "- name: a\n  url: http://h/\n".encode("utf-16"),
    "UTF-16 BE without BOM": "- name: a\n  url: http://h/\n".encode("utf-16-be"),
    "UTF-32": "- name: a\n  url: http://h/\n".encode("utf-32"),
    "lone surrogate escape": b'- {name: "\\ud800", url: "http://h/"}',
    "control character": b"- {name: a, url: 'http://h/'}\x07",
    "explicit int tag on text": b"- {name: a, url: 'http://h/', timeout: !!int abc}",
    "explicit float tag on text": b"- {name: a, url: 'http://h/', timeout: !!float abc}",
    "explicit bool tag on text": b"- {name: a, url: 'http://h/', verify_tls: !!bool maybe}",
    "5,000-digit timeout": b"- {name: a, url: 'http://h/', timeout: 1" + b"0" * 5000 + b"}",
    "400-digit timeout": b"- {name: a, url: 'http://h/', timeout: 1" + b"0" * 400 + b"}",
    "unclosed IPv6 bracket": b"- {name: a, url: 'http://[::1/'}",
    "python object tag": b"- !!python/object/apply:os.system ['true']",
    "undefined alias": b"- {name: *nowhere, url: 'http://h/'}",
    "many documents": b"- {name: a, url: 'http://h/'}\n---\n- {name: b, url: 'http://h/'}\n",
}


@pytest.mark.parametrize("data", EXPLICIT.values(), ids=EXPLICIT.keys())
def test_explicit_case(data: bytes) -> None:
    check(data)


@pytest.mark.parametrize("data", [billion_laughs(), bomb_as_header_mapping()],
                         ids=["lists", "mappings"])
def test_billion_laughs_stays_small(data: bytes) -> None:
    tracemalloc.start()
    try:
        outcome = check(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert isinstance(outcome, ConfigError)
    # Expanded, the bomb is 10^9 nodes; composed, it is a few dozen shared ones.
    assert peak < 8 * 1024 * 1024, f"peak {peak / 1e6:.1f} MB"


def test_utf8_bom_is_accepted() -> None:
    outcome = check("\ufeff- name: a\n  url: http://h/\n".encode())
    assert isinstance(outcome, Config)


def test_utf16_names_the_encoding_problem() -> None:
    outcome = check(EXPLICIT["UTF-16 with BOM"])
    assert isinstance(outcome, ConfigError)
    assert "UTF-8" in outcome.problems[0]


# -- through the command line ------------------------------------------------------------

CLI_CASES = [
    "billion laughs", "10,000 open brackets", "10,000 nested mappings", "10 MB timeout",
    "binary garbage", "UTF-16 with BOM", "explicit int tag on text", "control character",
]


def test_config_check_rejects_bad_files_without_a_traceback(tmp_path: Path) -> None:
    runs: list[tuple[str, Path, subprocess.Popen[bytes]]] = []
    for index, case in enumerate(CLI_CASES):
        path = tmp_path / f"case-{index}.yaml"
        path.write_bytes(EXPLICIT[case])
        runs.append((case, path, subprocess.Popen(
            [sys.executable, "-m", "availability_exporter", "--config.check", str(path)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )))
    for case, path, proc in runs:
        _, raw_stderr = proc.communicate(timeout=60)
        stderr = raw_stderr.decode("utf-8", "replace")
        assert proc.returncode == 2, (case, proc.returncode, stderr[-2000:])
        assert "Traceback" not in stderr, (case, stderr[-2000:])
        assert str(path) in stderr, (case, stderr[-2000:])
