"""Response checks (an endpoint's ``expect:``): compiled when the config loads, run on a response.

What "working" means beyond the Fetch rule (2xx within the latency threshold)::

    expect:
      status: [200, 204, "3xx"]          # codes and classes; default ["2xx"]
      body_contains: "ok"                # a string or a list of strings
      body_not_contains: ["maintenance"]
      body_regex: '"version": ?"\\d+'    # Python re, compiled at load
      body_not_regex: "(?i)error"
      json:                              # JMESPath (the jmespath library), compiled at load
        - {path: status, equals: UP}     # "$.status" works too (the "$." is dropped)
        - {path: "checks[?name=='db'].status | [0]", matches: "^(UP|OK)$"}
        - {path: build.version, exists: true}
      headers: {Content-Type: "^application/json"}   # header name -> regex (search)
      max_body_bytes: 65536              # fail when the whole body is larger

Body checks read at most the first :data:`BODY_CAP` bytes (1 MiB); the transport still reads the
body to its end (for timing and ``max_body_bytes``) and drops the rest.  A status outside
``status`` is the ``status`` reason; every other failed check is ``content``.  Failure messages
name the check (``expect.json[0] (status)``) and show at most :data:`SHOWN` characters of what
the response held; the probe redacts the endpoint's secrets from them.

The YAML side (:func:`compile_expect`) reports every problem with its line through the caller's
``problem`` callback, as config.py does for every other key.
"""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import httpx
import jmespath
import jmespath.exceptions
import jmespath.parser
import yaml

from availability_exporter import yamlnodes

# Body bytes a probe keeps for the checks; the rest is read to its end and dropped.
BODY_CAP: Final = 1024 * 1024
# Characters of response content a failure message may show (the issue allows 200 in all).
SHOWN: Final = 60
EXPECT_KEYS: Final = (
    "status", "body_contains", "body_not_contains", "body_regex", "body_not_regex", "json",
    "headers", "max_body_bytes",
)
JSON_KEYS: Final = ("path", "equals", "matches", "exists")
_JSON_TESTS: Final = ("equals", "matches", "exists")
_CLASS = re.compile(r"^([1-5])xx$", re.IGNORECASE)
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_MISSING: Final = object()

Problem = Callable[[yaml.Node, str], None]


def _show(value: object) -> str:
    """A value from the response, as JSON-ish text cut to SHOWN characters."""
    if isinstance(value, str):
        text = value
    else:
        try:
            text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
        except (TypeError, ValueError):
            text = repr(value)
    text = text.replace("\r", " ").replace("\n", " ")
    return yamlnodes.short(text, SHOWN)


@dataclass(frozen=True, slots=True)
class JsonCheck:
    """One ``json:`` item: a JMESPath and one test (equals, matches or exists)."""

    path: str
    expression: jmespath.parser.ParsedResult
    equals: object = _MISSING
    matches: re.Pattern[str] | None = None
    exists: bool | None = None

    def failure(self, document: object, label: str) -> str | None:
        try:
            value = self.expression.search(document)
        # The document is the server's: a function on the wrong type, a number too big to
        # compare or a very deep document fail this check, never the probe.
        except (jmespath.exceptions.JMESPathError, TypeError, ValueError, OverflowError,
                RecursionError) as exc:
            return f"{label}: {type(exc).__name__}"
        if self.exists is not None:
            if (value is not None) != self.exists:
                return f"{label}: " + ("missing" if self.exists else f"present ({_show(value)})")
            return None
        if value is None:
            return f"{label}: missing"
        if self.matches is not None:
            text = value if isinstance(value, str) else _show(value)
            if self.matches.search(text) is None:
                return f"{label}: {_show(value)} does not match {self.matches.pattern!r}"
            return None
        if not _same(value, self.equals):
            return f"{label}: got {_show(value)}, expected {_show(self.equals)}"
        return None


def _same(value: object, wanted: object) -> bool:
    """JSON equality where true is not 1 (Python's bool is an int)."""
    if isinstance(value, bool) or isinstance(wanted, bool):
        return type(value) is type(wanted) and value == wanted
    return value == wanted


@dataclass(frozen=True, slots=True)
class Expect:
    """An endpoint's compiled ``expect:``; checks run in the order of the class's fields."""

    codes: frozenset[int] = frozenset()
    classes: frozenset[int] = frozenset({2})  # 2 means 200-299
    body_contains: tuple[str, ...] = ()
    body_not_contains: tuple[str, ...] = ()
    body_regex: tuple[re.Pattern[str], ...] = ()
    body_not_regex: tuple[re.Pattern[str], ...] = ()
    json: tuple[JsonCheck, ...] = ()
    headers: tuple[tuple[str, re.Pattern[str]], ...] = ()
    max_body_bytes: int | None = None

    @property
    def needs_body(self) -> bool:
        """Whether the probe must keep the body's first BODY_CAP bytes for these checks."""
        return bool(self.body_contains or self.body_not_contains or self.body_regex
                    or self.body_not_regex or self.json)

    def status_ok(self, status: int) -> bool:
        return status in self.codes or status // 100 in self.classes

    def failure(self, headers: httpx.Headers, body: bytes, body_bytes: int) -> str | None:
        """Why the response fails a check (the first that fails), or None when all pass.

        ``body`` is the start of the body (at most BODY_CAP bytes are looked at);
        ``body_bytes`` is the whole body's size.
        """
        if self.max_body_bytes is not None and body_bytes > self.max_body_bytes:
            return (f"expect.max_body_bytes: the body has {body_bytes} bytes, more than "
                    f"{self.max_body_bytes}")
        for name, pattern in self.headers:
            # Header values are not shown: Set-Cookie and the like carry credentials.
            values = headers.get_list(name)
            if not values:
                return f"expect.headers.{name}: header missing"
            if not any(pattern.search(v) for v in values):
                return f"expect.headers.{name}: the value does not match {pattern.pattern!r}"
        if not self.needs_body:
            return None
        start = body[:BODY_CAP]
        text = start.decode(_charset(headers), errors="replace")
        for needle in self.body_contains:
            if needle not in text:
                return f"expect.body_contains {_show(needle)!r}: not in the body's first 1 MiB"
        for needle in self.body_not_contains:
            if needle in text:
                return f"expect.body_not_contains {_show(needle)!r}: found in the body"
        for pattern in self.body_regex:
            if pattern.search(text) is None:
                return (f"expect.body_regex {_show(pattern.pattern)!r}: no match in the body's "
                        f"first 1 MiB")
        for pattern in self.body_not_regex:
            found = pattern.search(text)
            if found is not None:
                return (f"expect.body_not_regex {_show(pattern.pattern)!r}: matched "
                        f"{_show(found.group(0))!r}")
        if self.json:
            try:
                document = json.loads(text)
            except json.JSONDecodeError as exc:
                cut = " (cut at 1 MiB)" if len(body) > BODY_CAP or body_bytes > BODY_CAP else ""
                return f"expect.json: the body is not valid JSON{cut}: {exc.msg} at {exc.pos}"
            except ValueError:  # an integer of more than 4,300 digits
                return "expect.json: the body's JSON holds a number too long to read"
            except RecursionError:
                return "expect.json: the body's JSON is nested too deeply"
            for index, check in enumerate(self.json):
                failed = check.failure(document, f"expect.json[{index}] ({_show(check.path)})")
                if failed is not None:
                    return failed
        return None


def _charset(headers: httpx.Headers) -> str:
    """The Content-Type's charset when Python knows it, else UTF-8."""
    match = re.search(r"charset=\"?([A-Za-z0-9_.:-]{1,40})", headers.get("content-type", ""))
    if match is None:
        return "utf-8"
    try:
        return codecs.lookup(match.group(1)).name
    except LookupError:
        return "utf-8"


# -- the YAML side ------------------------------------------------------------------------------


def compile_expect(node: yaml.Node, problem: Problem) -> Expect | None:
    """The ``expect:`` mapping compiled; every problem goes to ``problem`` (node, message)."""
    if yamlnodes.is_null(node):
        return None
    if not isinstance(node, yaml.MappingNode):
        problem(node, f"expect must be a mapping with {', '.join(EXPECT_KEYS)}, "
                      f"not {yamlnodes.kind(node)}")
        return None
    fields, keys_ok = yamlnodes.nested_fields(node, EXPECT_KEYS, "expect", problem)
    count = [0]

    def counted(node: yaml.Node, message: str) -> None:
        count[0] += 1
        problem(node, message)

    codes, classes = _status(fields.get("status"), counted)
    expect = Expect(
        codes=codes,
        classes=classes,
        body_contains=_strings(fields.get("body_contains"), "expect.body_contains", counted),
        body_not_contains=_strings(
            fields.get("body_not_contains"), "expect.body_not_contains", counted),
        body_regex=_regexes(fields.get("body_regex"), "expect.body_regex", counted),
        body_not_regex=_regexes(fields.get("body_not_regex"), "expect.body_not_regex", counted),
        json=_json(fields.get("json"), counted),
        headers=_headers(fields.get("headers"), counted),
        max_body_bytes=_size(fields.get("max_body_bytes"), counted),
    )
    return None if count[0] or not keys_ok else expect


def _text(node: yaml.Node, what: str, problem: Problem) -> str | None:
    if not isinstance(node, yaml.ScalarNode) or node.tag == yamlnodes.NULL_TAG:
        problem(node, f"{what} must be a string, not {yamlnodes.kind(node)}")
        return None
    return str(node.value)


def _items(node: yaml.Node) -> list[yaml.Node]:
    """A scalar or a list of them, as a list of nodes."""
    return list(node.value) if isinstance(node, yaml.SequenceNode) else [node]


def _status(node: yaml.Node | None, problem: Problem) -> tuple[frozenset[int], frozenset[int]]:
    if node is None:
        return frozenset(), frozenset({2})
    codes: set[int] = set()
    classes: set[int] = set()
    items = _items(node)
    if not items:
        problem(node, "expect.status must list at least one code or class such as \"2xx\"")
    for item in items:
        value = yamlnodes.number(item)
        text = str(item.value) if isinstance(item, yaml.ScalarNode) else None
        if value is None and text is not None and text.isascii() and text.isdigit():
            value = int(text)  # "200" quoted is still a code
        if isinstance(value, int) and 100 <= value <= 599:
            codes.add(value)
        elif value is None and text is not None and _CLASS.match(text):
            classes.add(int(text[0]))
        else:
            problem(item, f"expect.status: {yamlnodes.kind(item)} is neither a status code "
                          f"(100-599) nor a class (\"1xx\" to \"5xx\")")
    return frozenset(codes), frozenset(classes)


def _strings(node: yaml.Node | None, what: str, problem: Problem) -> tuple[str, ...]:
    if node is None:
        return ()
    out: list[str] = []
    for item in _items(node):
        text = _text(item, what, problem)
        if text is not None and not text:
            problem(item, f"{what} must not be empty")
        elif text is not None:
            out.append(text)
    return tuple(out)


def _regex(node: yaml.Node, what: str, problem: Problem) -> re.Pattern[str] | None:
    text = _text(node, what, problem)
    if text is None:
        return None
    try:
        return re.compile(text)
    except re.error as exc:
        problem(node, f"{what} {yamlnodes.short(text)!r} is not a valid regular expression: "
                      f"{exc.msg}" + (f" at position {exc.pos}" if exc.pos is not None else ""))
        return None
    except (OverflowError, RecursionError):
        problem(node, f"{what} {yamlnodes.short(text)!r} is too large to compile")
        return None


def _regexes(node: yaml.Node | None, what: str, problem: Problem) -> tuple[re.Pattern[str], ...]:
    if node is None:
        return ()
    compiled = (_regex(item, what, problem) for item in _items(node))
    return tuple(p for p in compiled if p is not None)


def _headers(node: yaml.Node | None, problem: Problem) -> tuple[tuple[str, re.Pattern[str]], ...]:
    if node is None:
        return ()
    if not isinstance(node, yaml.MappingNode):
        problem(node, f"expect.headers must be a mapping of header name to regex, "
                      f"not {yamlnodes.kind(node)}")
        return ()
    out: list[tuple[str, re.Pattern[str]]] = []
    seen: set[str] = set()
    for key_node, value_node in node.value:
        name = _text(key_node, "an expect.headers name", problem)
        if name is None:
            continue
        if not _TOKEN.match(name):
            problem(key_node, f"expect.headers: {yamlnodes.short(name)!r} is not a valid "
                              f"header name")
            continue
        if name.lower() in seen:
            problem(key_node, f"expect.headers: duplicate header {name!r}")
            continue
        seen.add(name.lower())
        pattern = _regex(value_node, f"expect.headers.{name}", problem)
        if pattern is not None:
            out.append((name, pattern))
    return tuple(out)


def _size(node: yaml.Node | None, problem: Problem) -> int | None:
    if node is None:
        return None
    value = yamlnodes.number(node)
    if not isinstance(value, int) or value <= 0:
        problem(node, f"expect.max_body_bytes must be a whole number of bytes greater than 0, "
                      f"not {yamlnodes.kind(node)}")
        return None
    return value


def _json(node: yaml.Node | None, problem: Problem) -> tuple[JsonCheck, ...]:
    if node is None:
        return ()
    if not isinstance(node, yaml.SequenceNode):
        problem(node, f"expect.json must be a list of {{path, equals | matches | exists}}, "
                      f"not {yamlnodes.kind(node)}")
        return ()
    out: list[JsonCheck] = []
    for index, item in enumerate(node.value):
        check = _json_check(item, f"expect.json[{index}]", problem)
        if check is not None:
            out.append(check)
    return tuple(out)


def _json_check(node: yaml.Node, what: str, problem: Problem) -> JsonCheck | None:
    if not isinstance(node, yaml.MappingNode):
        problem(node, f"{what} must be a mapping {{path, equals | matches | exists}}, "
                      f"not {yamlnodes.kind(node)}")
        return None
    fields, ok = yamlnodes.nested_fields(node, JSON_KEYS, what, problem)
    tests = [key for key in _JSON_TESTS if key in fields]
    if "path" not in fields:
        problem(node, f"{what}: missing required key 'path'")
        return None
    if len(tests) != 1:
        problem(node, f"{what}: give exactly one of equals, matches, exists"
                      + (f", not {' and '.join(tests)}" if tests else ""))
        ok = False
    path_node = fields["path"]
    path = _text(path_node, f"{what}.path", problem)
    expression = None
    if path is not None:
        try:
            # "$.status" is how JSONPath users write it; in JMESPath it is "status".
            expression = jmespath.compile(path[2:] if path.startswith("$.") else path)
        except jmespath.exceptions.JMESPathError as exc:
            problem(path_node, f"{what}.path {yamlnodes.short(path)!r} is not a valid JMESPath "
                               f"expression: {type(exc).__name__}")
            ok = False
    if not ok or path is None or expression is None:
        return None
    if "exists" in fields:
        exists = yamlnodes.boolean(fields["exists"])
        if exists is None:
            problem(fields["exists"], f"{what}.exists must be true or false, "
                                      f"not {yamlnodes.kind(fields['exists'])}")
            return None
        return JsonCheck(path, expression, exists=exists)
    if "matches" in fields:
        pattern = _regex(fields["matches"], f"{what}.matches", problem)
        return None if pattern is None else JsonCheck(path, expression, matches=pattern)
    return JsonCheck(path, expression, equals=yamlnodes.construct(fields["equals"]))
