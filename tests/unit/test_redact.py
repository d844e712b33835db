"""The one redaction function: every known value, in the forms it takes on the way out."""

from __future__ import annotations

import base64
import json
import re
from urllib.parse import quote, quote_plus

from bascule.redact import MASK, MIN_LENGTH, Redactor, clip, redact, redact_data, too_short

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
    assert r.redact("password s3cr%2Ft") == f"password {MASK}"


def test_longest_first_and_data() -> None:
    r = Redactor(["abcd", "abcdefgh", None, ""])
    assert r.redact("xabcdefghx abcd") == f"x{MASK}x {MASK}"
    data = {"k abcd": ["abcd", ("abcd", 3)], "n": None}
    assert r.redact_data(data) == {f"k {MASK}": [MASK, (MASK, 3)], "n": None}


def test_nothing_known_changes_nothing() -> None:
    assert not Redactor()
    assert Redactor().redact("text ***") == "text ***"
    assert redact("plain", Redactor()) == "plain"


# A value as a random token would be: long enough for every rule, with characters that each
# encoding escapes.
TOKEN = "tok-4f9/Ab+c&d<e>f=0 é~Zq7"


def masked(text: str, values: list[str] | None = None) -> str:
    return Redactor(values or [TOKEN]).redact(text)


def test_multi_line_value_whose_tail_starts_partway() -> None:
    key = (
        "-----BEGIN KEY-----\nMIIBVQIBADANBgkqhkiG9w0B\nAQEFAASCAT8wggE7AgEAAkEA\n"
        "-----END KEY-----\n"
    )
    tail = "...log truncated\nAQEFAASCAT8wggE7AgEAAkEA\n-----END KEY-----\n"
    assert masked(tail, [key]) == f"...log truncated\n{MASK}\n{MASK}\n"


SHORT_LINES = "ab12cd\nef34gh\nij56kl"  # no line long enough alone: only the whole is masked


def test_crlf_line_ends() -> None:
    assert (
        masked("v=" + SHORT_LINES.replace("\n", "\r\n") + "\r\n", [SHORT_LINES]) == f"v={MASK}\r\n"
    )
    crlf = SHORT_LINES.replace("\n", "\r\n")
    assert masked("v=" + SHORT_LINES, [crlf]) == f"v={MASK}"


def test_indented_yaml_block() -> None:
    text = "data:\n  key: |\n    ab12cd\n    ef34gh\n    ij56kl\n  other: 1\n"
    assert masked(text, [SHORT_LINES]) == f"data:\n  key: |\n    {MASK}\n  other: 1\n"


def test_base64_wrapped_at_76_columns_and_each_line_of_it() -> None:
    value = TOKEN * 5
    mime = base64.encodebytes(value.encode()).decode()  # three lines of 76 and a short one
    assert len(mime.splitlines()) > 2
    assert masked(f"blob:\n{mime}", [value]) == f"blob:\n{MASK}\n"
    tail = "\n".join(mime.splitlines()[1:])
    assert set(masked(tail, [value]).split("\n")) == {MASK}
    # Inside a longer encoded text, at each of the three alignments.
    for before in (b"", b"x", b"xy"):
        blob = base64.encodebytes(before + b"user=" + value.encode() + b"&more").decode()
        head, mask, rest = masked(blob, [value]).partition(MASK)
        # What is left is the encoding of the bytes around the value (7 and 5 bytes at most).
        assert mask and len(head) <= 10 and len(rest.strip()) <= 12, (head, rest)


def test_json_escapes_of_every_style() -> None:
    plain = json.dumps(TOKEN)[1:-1]
    forms = {
        "python": plain,
        "go html-safe": plain.replace("&", "\\u0026")
        .replace("<", "\\u003c")
        .replace(">", "\\u003e"),
        ".NET upper-case": plain.replace("&", "\\u0026")
        .replace("<", "\\u003C")
        .replace("+", "\\u002B"),
        "escaped slashes": plain.replace("/", "\\/"),
        "no ascii escapes": json.dumps(TOKEN, ensure_ascii=False)[1:-1].replace("/", "\\/"),
    }
    for style, form in forms.items():
        assert masked(f'{{"token": "{form}"}}') == f'{{"token": "{MASK}"}}', style


def test_percent_encoding_in_either_case() -> None:
    upper = quote(TOKEN, safe="")
    lower = re.sub("%[0-9A-F]{2}", lambda m: m.group().lower(), upper)
    assert "%2f" in lower
    for form in (upper, lower, quote_plus(TOKEN, safe="/")):
        assert masked(f"?t={form}&x=1") == f"?t={MASK}&x=1", form


def test_url_safe_base64_alone_and_inside_a_longer_encoding() -> None:
    # TOKEN's encoding has a '+', so its URL-safe one ('-') differs from the standard one;
    # one and two more bytes give each padding.
    for value in (TOKEN, TOKEN + "?", TOKEN + "??"):
        urlsafe = base64.urlsafe_b64encode(value.encode()).decode()
        assert urlsafe != base64.b64encode(value.encode()).decode()
        assert masked(f"jwt {urlsafe} end", [value]) == f"jwt {MASK} end", urlsafe
        for before in (b"", b"x", b"xy"):
            blob = base64.urlsafe_b64encode(before + b"user=" + value.encode() + b"&more").decode()
            head, mask, rest = masked(blob, [value]).partition(MASK)
            # What is left encodes the bytes around the value (7 and 5 bytes at most).
            assert mask and len(head) <= 10 and len(rest) <= 12, (before, head, rest)


def test_hex_in_either_case() -> None:
    hexed = TOKEN.encode().hex()
    assert masked(f"dump {hexed} end") == f"dump {MASK} end"
    assert masked(f"dump {hexed.upper()} end") == f"dump {MASK} end"


def test_a_value_cut_short() -> None:
    assert masked(f"token {TOKEN[:10]}…") == f"token {MASK}…"
    assert masked(f"token {TOKEN[:12]}... (truncated)") == f"token {MASK}... (truncated)"
    assert masked(f"token {TOKEN[:9]}") == f"token {MASK}"
    assert masked(f"token {TOKEN[:9]}\nnext line") == f"token {MASK}\nnext line"
    # Shorter than MIN_LENGTH, or followed by more text: ordinary text, left alone.
    assert masked(f"token {TOKEN[: MIN_LENGTH - 1]}…") == f"token {TOKEN[: MIN_LENGTH - 1]}…"
    assert masked(f"{TOKEN[:10]} and more") == f"{TOKEN[:10]} and more"


def test_overlapping_values_are_masked_whole() -> None:
    assert (
        masked("x-prefix-secretpart-suffix-x", ["prefix-secretpart", "secretpart-suffix"])
        == f"x-{MASK}-x"
    )


def test_too_short_to_mask() -> None:
    for value in ("1", "null", "true", "false", "  short  ", "x" * (MIN_LENGTH - 1)):
        assert too_short(value), value
    assert not too_short("x" * MIN_LENGTH)


def test_a_cut_marked_by_clip_is_masked_wherever_the_text_goes() -> None:
    cut = clip(f"error: {TOKEN} rejected", 17)
    assert cut == f"error: {TOKEN[:10]}…"
    assert masked(f"step failed: {cut}; rolled back") == f"step failed: error: {MASK}…; rolled back"
    assert clip("short", 17) == "short"


def test_values_added_later_are_masked_too() -> None:
    r = Redactor()
    assert not r
    r.add(["first-secret-1"])
    r.add(["second-secret-2", "first-secret-1"])
    assert r and Redactor(["first-secret-1"])
    assert r.redact("a first-secret-1 b second-secret-2") == f"a {MASK} b {MASK}"


def test_overlapping_occurrences_and_adjacent_values_become_one_mask() -> None:
    assert masked("aaaaaaaaa", ["aaaaaaaa"]) == MASK  # at offsets 0 and 1
    assert masked("[secret-one-1secret-two-2]", ["secret-one-1", "secret-two-2"]) == f"[{MASK}]"


def test_redact_data_with_a_given_redactor() -> None:
    assert redact_data({"k": [TOKEN, 1]}, Redactor([TOKEN])) == {"k": [MASK, 1]}


def test_clip_keeps_a_text_of_exactly_the_limit() -> None:
    assert clip("exactly7", 8) == "exactly7"
    assert clip("exactly8!", 8) == "exactly8…"


def test_a_line_of_a_multi_line_value_alone() -> None:
    value = "first-line-1\nsecond-line-2"
    assert masked("tail: second-line-2 end", [value]) == f"tail: {MASK} end"


def test_a_multi_line_value_encoded_with_the_other_line_ends() -> None:
    lf = "first-line-1\nsecond-line-2"
    crlf = lf.replace("\n", "\r\n")
    for value, sent in ((lf, crlf), (crlf, lf)):
        for encoded in (base64.b64encode(sent.encode()).decode(), sent.encode().hex()):
            assert masked(f"x {encoded} y", [value]) == f"x {MASK} y", (value, encoded)


def test_the_password_of_user_and_password_without_a_url() -> None:
    assert masked("login with pw hunter2-long", ["admin:hunter2-long"]) == f"login with pw {MASK}"
    # Only the first colon separates the user: the password may hold more.
    assert masked("pw pass:word-123", ["admin:pass:word-123"]) == f"pw {MASK}"


def test_a_url_password_ends_at_the_first_at_sign_after_the_first_scheme() -> None:
    url = "https://deploy:s3cretpw@host.example/path@v2"
    assert masked("password s3cretpw rejected", [url]) == f"password {MASK} rejected"
    url = "https://deploy:s3cretpw@host.example/login?next=https://other.example/"
    assert masked("password s3cretpw rejected", [url]) == f"password {MASK} rejected"


def test_a_url_password_of_four_characters_is_masked_alone_a_shorter_one_is_not() -> None:
    assert masked("pw wxyz", ["https://u:wxyz@host.example/long-path"]) == f"pw {MASK}"
    assert masked("about xyz", ["https://u:xyz@host.example/long-path"]) == "about xyz"


def test_an_encoded_form_cut_short() -> None:
    # A JSON, percent or base64 form of the value, cut short after 8 characters or more.
    json_form = json.dumps(TOKEN)[1:-1]
    percent = quote(TOKEN, safe="")
    encoded = base64.b64encode(TOKEN.encode()).decode()
    for form in (json_form, percent, encoded):
        for cut in (9, 13, len(form) - 2):
            assert masked(f"v={form[:cut]}…") == f"v={MASK}…", (form, cut)


def test_every_cut_occurrence_is_masked() -> None:
    text = f"{TOKEN[:9]}\n{TOKEN[:10]}\n{TOKEN[:11]}…"
    assert masked(text) == f"{MASK}\n{MASK}\n{MASK}…"


def test_characters_outside_the_basic_plane_in_json() -> None:
    value = "emoji-\U0001f600-secret"
    escaped = json.dumps(value)[1:-1]  # a surrogate pair: \ud83d\ude00
    assert "\\ud83d\\ude00" in escaped
    assert masked(f'{{"v": "{escaped}"}}', [value]) == f'{{"v": "{MASK}"}}'
    upper = escaped.replace("\\ud83d\\ude00", "\\uD83D\\uDE00")  # as .NET writes it
    assert masked(f'{{"v": "{upper}"}}', [value]) == f'{{"v": "{MASK}"}}'
