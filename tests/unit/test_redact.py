"""The one redaction function: every known value, in the forms it takes on the way out."""

from __future__ import annotations

import base64
import json
from urllib.parse import quote

from bascule.redact import MASK, Redactor, redact, variants

CANARY = "canary-Zx8/q+w&d=1 é"


def test_masks_the_value_and_its_encodings() -> None:
    r = Redactor([CANARY])
    for form in (
        CANARY,
        quote(CANARY, safe=""),
        base64.b64encode(CANARY.encode()).decode(),
        json.dumps(CANARY)[1:-1],
        json.dumps({"x": CANARY}),
    ):
        out = r.redact(f"before {form} after")
        assert CANARY not in out and form not in out and MASK in out, (form, out)
        assert out.startswith("before ") and out.endswith(" after"), out


def test_password_of_a_url_is_masked_even_alone() -> None:
    url = "postgresql://app:s3cr%2Ft@db:5432/app"
    r = Redactor([url])
    assert r.redact("connect failed for password s3cr/t") == f"connect failed for password {MASK}"
    assert r.redact(f"dsn={url}") == f"dsn={MASK}"
    assert "s3cr%2Ft" in variants(url)


def test_longest_first_and_data() -> None:
    r = Redactor(["abcd", "abcdefgh", None, ""])
    assert r.redact("xabcdefghx abcd") == f"x{MASK}x {MASK}"
    data = {"k abcd": ["abcd", ("abcd", 3)], "n": None}
    assert r.redact_data(data) == {f"k {MASK}": [MASK, (MASK, 3)], "n": None}


def test_nothing_known_changes_nothing() -> None:
    assert not Redactor()
    assert Redactor().redact("text ***") == "text ***"
    assert redact("plain", Redactor()) == "plain"
