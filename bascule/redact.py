"""Masking secret values in anything Bascule writes: logs, reports, history, events, messages.

One ``Redactor`` knows the values and the forms they take on the way out (URL-encoded, base64,
escaped inside JSON, the password of a ``user:password`` pair); ``redact`` masks them in a
string, ``redact_data`` in every string of JSON-like data. ``KNOWN`` is the process's
redactor: the flows add the secrets they resolve to it, and everything that prints app output
or leaves the process goes through it. Pure: no I/O.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote, quote_plus, unquote

__all__ = ["KNOWN", "MASK", "Redactor", "redact", "redact_data", "variants"]

MASK = "***"
# A password part shorter than this is too likely to be ordinary text to mask on its own.
_MIN_PART = 4


def variants(value: str) -> set[str]:
    """The forms ``value`` may take in text: as is, percent-encoded (as in a URL or a form),
    base64 (a Kubernetes Secret's data), JSON-escaped, and the password of ``user:password``
    (alone, as a basic-auth string, or in a URL)."""
    if not value:
        return set()
    forms = {
        value,
        quote(value, safe=""),
        quote_plus(value, safe=""),
        unquote(value),
        json.dumps(value)[1:-1],
        json.dumps(value, ensure_ascii=False)[1:-1],
        base64.b64encode(value.encode()).decode(),
        base64.urlsafe_b64encode(value.encode()).decode(),
    }
    # Inside a longer base64 text a value's own encoding may be padded differently.
    forms |= {form.rstrip("=") for form in forms if form.endswith("=") and len(form) > _MIN_PART}
    # The user information of a URL, or a whole `user:password` (a basic-auth string).
    _, sep, rest = value.partition("://")
    userinfo = rest.split("@", 1)[0] if sep and "@" in rest else "" if sep else value
    _, colon, password = userinfo.partition(":")
    if colon and len(password) >= _MIN_PART:
        forms |= {password, unquote(password), quote(unquote(password), safe="")}
    return {form for form in forms if form}


class Redactor:
    """Masks every registered value, in each of its ``variants``, with ``MASK``."""

    def __init__(self, values: Iterable[str | None] = ()) -> None:
        self._lock = threading.Lock()
        self._forms: tuple[str, ...] = ()
        self.add(values)

    def add(self, values: Iterable[str | None]) -> None:
        """Registers more values (empty and None ones are ignored)."""
        with self._lock:
            forms = set(self._forms)
            for value in values:
                if value:
                    forms |= variants(value)
            # Longest first, so that a value containing another is masked whole.
            self._forms = tuple(sorted(forms, key=lambda f: (-len(f), f)))

    def __bool__(self) -> bool:
        return bool(self._forms)

    def redact(self, text: str) -> str:
        for form in self._forms:
            if form in text:
                text = text.replace(form, MASK)
        return text

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
