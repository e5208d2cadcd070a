"""InfluxDB line protocol, one line at a time: the grammar twice, as a precise parser and as
regular expressions that must accept exactly the same lines (tests/sources check that).

    measurement[,tag=value...] field=value[,field=value...] [timestamp]

Following influxdata/line-protocol's EBNF: sections are separated by one or more spaces;
leading and trailing spaces are allowed; `#` starts a comment; a run of backslashes and the
character after it is one unit (so `\\,` does not split), and unescaping turns `\\X` into X
only for the section's escapable characters (measurement: space and comma; keys and tag
values: comma, equals and space; strings: quote and backslash). Field values are floats
(`-1.5e3`, no leading `+`), integers `1i`, unsigned `1u`, booleans (t, T, true, True, TRUE,
f, F, false, False, FALSE) and quoted strings. Control characters are allowed only in strings
(and tabs in comments). A raw newline always ends a line.

`parse_line` raises LineSyntaxError(byte offset, message) for text outside the grammar; a
value inside the grammar but out of range (int64, uint64, float, timestamp) is the business
of `field_value` / `timestamp_ns`, which raise LineValueError.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

INT64_MAX = 2**63 - 1
UINT64_MAX = 2**64 - 1
TRUE = frozenset({"t", "T", "true", "True", "TRUE"})
FALSE = frozenset({"f", "F", "false", "False", "FALSE"})

_NP = r"\x00-\x1f\x7f"
_ESC = rf"\\+[^\\{_NP}]"
_KEY = rf"(?:[^ ,=\\{_NP}]|{_ESC})+"
_STRING = r'"(?:[^"\\]|\\[\s\S])*"'
_BOOL = "(?:" + "|".join(sorted(TRUE | FALSE, key=len, reverse=True)) + ")"
_INT = r"-?[0-9]+i"
_UINT = r"[0-9]+u"
_FLOAT = r"-?(?:[0-9]+(?:\.[0-9]*)?(?:[eE][+-]?[0-9]+)?|\.[0-9]+(?:[eE][+-]?[0-9]+)?)"
_NUMBER = rf"(?:{_BOOL}|{_INT}|{_UINT}|{_FLOAT})"


def _point(key: str, measurement_first: str, measurement_rest: str, value: str) -> str:
    fields = rf"{key}={value}(?:,{key}={value})*"
    return (rf"^ *{measurement_first}{measurement_rest}*(?:,{key}={key})* +{fields}"
            r"(?: +-?[0-9]+)? *$")


POINT_RE = _point(_KEY, rf"(?:[^ ,#\\{_NP}]|{_ESC})", rf"(?:[^ ,\\{_NP}]|{_ESC})",
                  rf"(?:{_STRING}|{_NUMBER})")
"""A valid point line (after its trailing \\r is removed): RE2 / Rust regex syntax."""

SIMPLE_POINT_RE = _point(rf"[^ ,=\\{_NP}\"]+", rf"[^ ,#\\{_NP}\"]", rf"[^ ,\\{_NP}\"]",
                         _NUMBER)
"""A valid point line with no backslash and no quote: what the vectorized path decodes."""

SKIP_RE = r"^ *(?:#[^\x00-\x08\x0a-\x1f\x7f]*)?$"
"""A blank or comment line (carries no point)."""

POINT_WITH_TS_RE = POINT_RE.replace(r"(?: +-?[0-9]+)? *$", r" +-?[0-9]+ *$")
"""A valid point line that carries its own timestamp."""


def tag_value_re(tag: str) -> str:
    """A valid point line's value of tag `tag` (the first, escapes as written) as group
    `value`: the tag section is matched pair by pair, so only a whole tag key matches."""
    measurement = rf"(?:[^ ,#\\{_NP}]|{_ESC})(?:[^ ,\\{_NP}]|{_ESC})*"
    return rf"^ *{measurement}(?:,{_KEY}={_KEY})*?,{re.escape(tag)}=(?P<value>{_KEY})[ ,]"


_FLOAT_FULL = re.compile(_FLOAT + r"\Z")
_INT_FULL = re.compile(r"-?[0-9]+\Z")
_UINT_FULL = re.compile(r"[0-9]+\Z")
_MEASUREMENT_ESCAPES = frozenset(" ,")
_KEY_ESCAPES = frozenset(",= ")


class LineSyntaxError(ValueError):
    """A line outside the grammar; `offset` is the byte offset in the line (0-based)."""

    def __init__(self, offset: int, message: str) -> None:
        super().__init__(message)
        self.offset = offset


class LineValueError(ValueError):
    """A value inside the grammar that cannot be stored (out of range)."""


@dataclass
class Point:
    measurement: str
    tags: list[tuple[str, str]] = field(default_factory=list)
    fields: list[tuple[str, str, str]] = field(default_factory=list)
    """(key, kind, text): kind f, i, u, b or s; text is the number as written (without the
    i/u suffix) or the unescaped string."""
    timestamp: str | None = None


def _control(char: str) -> bool:
    return ord(char) < 32 or ord(char) == 127


def unescape(text: str, escapable: frozenset[str]) -> str:
    if "\\" not in text:
        return text
    out: list[str] = []
    i = 0
    while i < len(text):
        if text[i] == "\\" and i + 1 < len(text) and text[i + 1] in escapable:
            out.append(text[i + 1])
            i += 2
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


class _Scanner:
    def __init__(self, line: str) -> None:
        self.line = line
        self.i = 0

    def error(self, message: str, at: int | None = None) -> LineSyntaxError:
        position = self.i if at is None else at
        return LineSyntaxError(len(self.line[:position].encode()), message)

    def peek(self) -> str:
        return self.line[self.i] if self.i < len(self.line) else ""

    def spaces(self) -> int:
        start = self.i
        while self.peek() == " ":
            self.i += 1
        return self.i - start

    def token(self, stops: str, what: str) -> str:
        """Characters up to an unescaped stop character; escapes stay as written."""
        line, start = self.line, self.i
        while self.i < len(line):
            char = line[self.i]
            if char == "\\":
                run = self.i
                while self.peek() == "\\":
                    self.i += 1
                if self.i >= len(line) or _control(line[self.i]):
                    raise self.error(f"a backslash in the {what} must be followed by a "
                                     "printable character", run)
                self.i += 1
            elif char in stops:
                break
            elif _control(char):
                raise self.error(f"control character {char!r} in the {what}")
            else:
                self.i += 1
        return line[start:self.i]

    def expect(self, char: str, message: str) -> None:
        if self.peek() != char:
            found = repr(self.peek()) if self.peek() else "end of line"
            raise self.error(f"{message}, found {found}")
        self.i += 1

    def string(self) -> str:
        line, start = self.line, self.i
        self.i += 1
        while self.i < len(line) and line[self.i] != '"':
            self.i += 2 if line[self.i] == "\\" else 1
        if self.i >= len(line):
            raise self.error("string field value has no closing quote", start)
        self.i += 1
        return line[start + 1:self.i - 1].replace('\\"', '"').replace("\\\\", "\\")

    def value(self, key: str) -> tuple[str, str]:
        if self.peek() == '"':
            return "s", self.string()
        start = self.i
        while self.i < len(self.line) and self.line[self.i] not in ", ":
            self.i += 1
        text = self.line[start:self.i]
        if text in TRUE or text in FALSE:
            return "b", text
        if text.endswith("i") and _INT_FULL.match(text[:-1]):
            return "i", text[:-1]
        if text.endswith("u") and _UINT_FULL.match(text[:-1]):
            return "u", text[:-1]
        if _FLOAT_FULL.match(text):
            return "f", text
        raise self.error(f"invalid value {text!r} for field {key!r} (a number such as 1.5, "
                         '1i or 1u, a boolean, or a "string")', start)


def parse_line(line: str) -> Point | None:
    """The point of one line (without its \\n); None for a blank or comment line."""
    scan = _Scanner(line)
    scan.spaces()
    if scan.i == len(line):
        return None
    if scan.peek() == "#":
        bad = next((c for c in line[scan.i:] if _control(c) and c != "\t"), None)
        if bad is not None:
            raise scan.error(f"control character {bad!r} in a comment", line.index(bad))
        return None
    raw = scan.token(" ,", "measurement")
    if not raw:
        raise scan.error("missing measurement name")
    point = Point(unescape(raw, _MEASUREMENT_ESCAPES))
    while scan.peek() == ",":
        scan.i += 1
        key = scan.token(" ,=", "tag key")
        if not key:
            raise scan.error("expected a tag key after ','")
        scan.expect("=", f"expected '=' after tag key {key!r}")
        value = scan.token(" ,=", "tag value")
        if not value:
            raise scan.error(f"expected a value for tag {key!r}")
        point.tags.append((unescape(key, _KEY_ESCAPES), unescape(value, _KEY_ESCAPES)))
    if not scan.spaces():
        raise scan.error("expected a space, then the fields" if scan.peek() else
                         "a point needs at least one field (measurement field=value)")
    while True:
        key = scan.token(" ,=", "field key")
        if not key:
            raise scan.error("expected a field key")
        scan.expect("=", f"expected '=' after field key {key!r}")
        kind, text = scan.value(key)
        point.fields.append((unescape(key, _KEY_ESCAPES), kind, text))
        if scan.peek() != ",":
            break
        scan.i += 1
    if scan.i == len(line):
        return point
    if not scan.spaces():
        raise scan.error(f"unexpected {scan.peek()!r} after the fields")
    if scan.i < len(line):
        start = scan.i
        while scan.i < len(line) and line[scan.i] != " ":
            scan.i += 1
        if not _INT_FULL.match(line[start:scan.i]):
            raise scan.error(f"invalid timestamp {line[start:scan.i]!r} (an integer)", start)
        point.timestamp = line[start:scan.i]
        scan.spaces()
        if scan.i < len(line):
            raise scan.error("unexpected text after the timestamp")
    return point


def field_value(kind: str, text: str) -> float | str:
    """The float of a numeric or boolean field (LineValueError when out of range); strings
    are returned as they are."""
    if kind == "b":
        return 1.0 if text in TRUE else 0.0
    if kind == "s":
        return text
    if kind == "i" and not -INT64_MAX - 1 <= int(text) <= INT64_MAX:
        raise LineValueError(f"integer {text}i is out of the int64 range")
    if kind == "u" and int(text) > UINT64_MAX:
        raise LineValueError(f"unsigned {text}u is out of the uint64 range")
    value = float(text)
    if not math.isfinite(value):
        raise LineValueError(f"float {text} is out of range")
    return value


def timestamp_ns(text: str, ns_per_unit: int) -> int:
    """Nanoseconds since the epoch; LineValueError if they do not fit in an int64."""
    value = int(text) * ns_per_unit
    if not -INT64_MAX - 1 <= value <= INT64_MAX:
        raise LineValueError(f"timestamp {text} is out of range for its precision")
    return value
