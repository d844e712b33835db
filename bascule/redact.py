"""Masking secret values in anything Bascule writes: logs, reports, history, events, state
messages, artifacts.

One ``Redactor`` knows the values and masks every occurrence of each, in every form it takes
on the way out, with ``MASK`` (overlapping occurrences become one mask):

- as typed, or with any of its characters escaped the way text leaves a process:
  percent-encoding in either case (``+`` for a space), JSON (``\\u0026`` in either case,
  ``\\/``, ``\\n``), HTML entities; its line breaks as LF or CRLF, raw or escaped, each next
  line indented or not (a YAML block);
- base64, standard and URL-safe, standing alone or at any of the three alignments it takes
  inside a longer encoded text, with line breaks anywhere (MIME wraps at 76 columns), and
  each line of the value's own MIME encoding on its own;
- hex, in either case;
- each line of a multi-line value long enough to be masked alone (a log tail that starts
  partway through the value), and the password of ``user:password`` or of a URL;
- a value cut short: a prefix of at least ``MIN_LENGTH`` characters of the value (or of its
  JSON, percent or base64 form) followed by an ellipsis, a line end or the end of the text.

``MIN_LENGTH``: a value shorter than this (``1``, ``null``, ``true``) cannot be masked
safely: its masks would hit ordinary text and so show where it is. ``too_short`` is that
rule; resolving a secret refuses such a value (``tasks/secretref.py``).

``redact`` masks a string, ``redact_data`` every string of JSON-like data (so a mask never
breaks the data's encoding). ``KNOWN`` is the process's redactor: the flows add the secrets
they resolve to it, and everything that prints app output or leaves the process goes through
it. Pure: no I/O.
"""

from __future__ import annotations

import base64
import json
import re
import threading
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import quote, unquote

__all__ = [
    "KNOWN",
    "MASK",
    "MIN_LENGTH",
    "Redactor",
    "clip",
    "redact",
    "redact_data",
    "too_short",
]

MASK = "***"
# The shortest value that can be masked (surrounding whitespace aside), the shortest line of
# a multi-line value masked on its own, and the shortest cut-off prefix masked.
MIN_LENGTH = 8
# A password part shorter than this is too likely to be ordinary text to mask on its own.
_MIN_PART = 4
_CUTS = ("…", "...", "\n", "\r")

_JSON_SHORT = {
    '"': '\\"',
    "\\": "\\\\",
    "/": "\\/",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
}
_HTML_NAMED = {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&apos;"}


def too_short(value: str) -> bool:
    """Whether ``value`` is too short to be masked safely (see ``MIN_LENGTH``)."""
    return len(value.strip()) < MIN_LENGTH


def clip(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, the cut marked with an ellipsis: a secret cut
    there is still masked, wherever the text goes on (a cut must be marked to be seen)."""
    return text if len(text) <= limit else text[:limit] + "…"


def _either_case(text: str) -> str:
    """A pattern for ``text`` with each letter in either case (hex digits, escapes)."""
    return "".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else re.escape(c) for c in text)


def _char(c: str) -> str:
    """A pattern for one character as text may carry it: as is, or escaped for JSON, a URL
    or HTML. Letters and digits are never escaped by anyone."""
    if c.isascii() and c.isalnum():
        return c
    units = c.encode("utf-16-be")
    forms = [
        re.escape(c),
        "".join(_either_case(f"\\u{units[i : i + 2].hex()}") for i in range(0, len(units), 2)),
        _either_case("".join(f"%{b:02x}" for b in c.encode())),
    ]
    if c in _JSON_SHORT:
        forms.append(re.escape(_JSON_SHORT[c]))
    if c == " ":
        forms.append(r"\+")
    if c in _HTML_NAMED:
        forms += [re.escape(_HTML_NAMED[c]), f"&#0*{ord(c)};", _either_case(f"&#x0*{ord(c):x};")]
    return "(?:" + "|".join(forms) + ")"


# A line break, raw or escaped, LF or CRLF, and the next line's indentation.
_BREAK = f"(?:{_char(chr(13))})?{_char(chr(10))}[ \\t]*"


def _text(piece: str) -> str:
    """A pattern for ``piece`` as text, escaped or not, its line breaks as ``_BREAK``."""
    lines = re.split(r"\r?\n", piece.strip("\r\n"))
    return _BREAK.join("".join(_char(c) for c in line) for line in lines)


def _aligned(data: bytes, skip: int, encode: Callable[[bytes], bytes]) -> str:
    """The base64 characters that depend on ``data`` alone when it follows ``skip`` other
    bytes (0-2) inside a longer encoded text."""
    encoded = encode(bytes(skip) + data).decode()
    return encoded[-(-8 * skip // 6) : 8 * (skip + len(data)) // 6]


def _base64(data: bytes) -> set[str]:
    texts = {base64.b64encode(data).decode(), base64.urlsafe_b64encode(data).decode()}
    texts |= {
        _aligned(data, skip, encode)
        for skip in range(3)
        for encode in (base64.b64encode, base64.urlsafe_b64encode)
    }
    # A line break may come anywhere (MIME, PEM), with indentation (a YAML block).
    patterns = {r"\s*".join(map(re.escape, text)) for text in texts if len(text) >= MIN_LENGTH}
    # A tail of the value's own MIME encoding (76 columns) starts with a whole line.
    mime = base64.encodebytes(data).decode().split()
    return patterns | {re.escape(line) for line in mime if len(line) >= MIN_LENGTH}


def _pieces(value: str) -> set[str]:
    """The texts of ``value`` to look for in every encoding: itself, trimmed,
    percent-decoded, with LF and with CRLF line ends, and the password of ``user:password``
    (alone, as a basic-auth string, or in a URL)."""
    pieces = {value, value.strip(), unquote(value)}
    if "\n" in value:
        lf = value.replace("\r\n", "\n")
        pieces |= {lf, lf.replace("\n", "\r\n")}
    _, sep, rest = value.partition("://")
    userinfo = rest.split("@", 1)[0] if sep and "@" in rest else "" if sep else value
    _, colon, password = userinfo.partition(":")
    if colon and len(password) >= _MIN_PART:
        pieces.add(unquote(password))
    return {piece for piece in pieces if piece.strip()}


def _lines(value: str) -> set[str]:
    """Each line of a multi-line ``value`` long enough to be masked on its own: a log tail
    may start partway through the value."""
    lines = [line.strip() for line in re.split(r"\r?\n", value)]
    return {line for line in lines if not too_short(line)} if len(lines) > 1 else set()


def _patterns(value: str) -> set[str]:
    """The patterns that find ``value`` in any of its forms (the module's list)."""
    out = {_text(piece) for piece in _pieces(value) | _lines(value)}
    for piece in _pieces(value):
        data = piece.encode()
        out |= {_either_case(data.hex())} | _base64(data)
    return out


def _prefixed(value: str) -> set[str]:
    """The forms of ``value`` whose prefix, cut short, is masked too."""
    return {
        form
        for piece in _pieces(value) | _lines(value)
        for form in (
            piece,
            json.dumps(piece)[1:-1],
            quote(piece, safe=""),
            base64.b64encode(piece.encode()).decode().rstrip("="),
        )
        if len(form) > MIN_LENGTH
    }


def _cut_spans(text: str, form: str) -> Iterable[tuple[int, int]]:
    """Where a prefix of ``form`` (``MIN_LENGTH`` characters or more, not all of it) ends
    ``text`` or a line of it, or comes before an ellipsis."""
    head = form[:MIN_LENGTH]
    start = text.find(head)
    while start != -1:
        end = start + MIN_LENGTH
        while end < len(text) and end - start < len(form) and text[end] == form[end - start]:
            end += 1
        if end - start < len(form) and (end == len(text) or text.startswith(_CUTS, end)):
            yield start, end
        start = text.find(head, start + 1)


def _masked(text: str, spans: list[tuple[int, int]]) -> str:
    """``text`` with each stretch that ``spans`` cover (merged where they overlap or touch)
    replaced by one ``MASK``."""
    merged: list[list[int]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    out: list[str] = []
    done = 0
    for start, end in merged:
        out += [text[done:start], MASK]
        done = end
    return "".join(out) + text[done:]


class Redactor:
    """Masks every registered value, in each of its forms, with ``MASK``."""

    def __init__(self, values: Iterable[str | None] = ()) -> None:
        self._lock = threading.Lock()
        self._values: set[str] = set()
        self._patterns: tuple[re.Pattern[str], ...] = ()
        self._prefixed: tuple[str, ...] = ()
        self.add(values)

    def add(self, values: Iterable[str | None]) -> None:
        """Registers more values (empty and None ones are ignored). A value ``too_short``
        refuses is masked too, wherever it occurs: refuse it before (tasks/secretref.py)."""
        with self._lock:
            new = {value for value in values if value and value not in self._values}
            if not new:
                return
            known = {p.pattern for p in self._patterns}
            fresh = {p for value in new for p in _patterns(value)} - known
            self._patterns += tuple(re.compile(p) for p in sorted(fresh))
            self._prefixed = tuple(
                sorted(set(self._prefixed).union(*(_prefixed(value) for value in new)))
            )
            self._values |= new

    def __bool__(self) -> bool:
        return bool(self._values)

    def redact(self, text: str) -> str:
        spans: list[tuple[int, int]] = []
        for pattern in self._patterns:
            found = pattern.search(text)
            while found:  # overlapping occurrences too: each start is tried
                spans.append(found.span())
                found = pattern.search(text, found.start() + 1)
        for form in self._prefixed:
            spans.extend(_cut_spans(text, form))
        return _masked(text, spans) if spans else text

    def redact_data(self, data: Any) -> Any:
        """``data`` (dicts, lists, strings, scalars) with every string redacted, keys too."""
        if isinstance(data, str):
            return self.redact(data)
        if isinstance(data, dict):
            return {self.redact_data(k): self.redact_data(v) for k, v in data.items()}
        if isinstance(data, list | tuple):
            return type(data)(self.redact_data(item) for item in data)
        return data


# The secrets this process has resolved: a flow run adds the values it deploys.
KNOWN = Redactor()


def redact(text: str, redactor: Redactor = KNOWN) -> str:
    """``text`` with every secret ``redactor`` knows (default: this process's) masked."""
    return redactor.redact(text)


def redact_data(data: Any, redactor: Redactor = KNOWN) -> Any:
    """JSON-like ``data`` with every secret ``redactor`` knows masked in its strings."""
    return redactor.redact_data(data)
