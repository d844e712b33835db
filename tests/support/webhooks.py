"""Local stand-ins for Slack's and Discord's webhook endpoints (loopback only), and checks
that a body is one those APIs accept.

A ``Receiver`` records every POST (path, headers, JSON body) and answers as told: 200 as
Slack does (204 for Discord), a queue of scripted answers first (``429`` with a
Retry-After, ``500``), or nothing at all once ``down()`` (the port is closed).
"""

from __future__ import annotations

import contextlib
import json
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from bascule.markdown import one_line

# The secret part of a webhook URL: tests check it shows up nowhere.
TOKEN = "XXwebhookTOKEN4711XX"


@dataclass
class Request:
    path: str
    body: Any
    at: float
    status: int = 0


@dataclass
class Receiver:
    kind: str  # "slack" or "discord"
    requests: list[Request] = field(default_factory=list)
    script: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    always: int | None = None  # answer every request with this status
    echo: bool = False  # print one line per message (make demo)
    delay: float = 0.0  # seconds before answering: a slow receiver
    _server: ThreadingHTTPServer | None = None

    def __post_init__(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = raw.decode(errors="replace")
                time.sleep(receiver.delay)
                status, headers = receiver.answer(body)
                receiver.requests.append(Request(self.path, body, time.time(), status))
                if receiver.echo:
                    print(receiver.summary(body), flush=True)
                payload = b"ok" if status == 200 else b"" if status == 204 else b"error"
                # A sender that gave up waiting (a slow receiver's test) has gone: no answer.
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self.send_response(status)
                    for name, value in headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        self.port = self._server.server_address[1]

    def answer(self, body: Any) -> tuple[int, dict[str, str]]:
        if self.script:
            return self.script.pop(0)
        if self.always is not None:
            return self.always, {}
        if self.problem(body):  # as the real APIs do: 400 for a body they do not accept
            return 400, {}
        return (200, {}) if self.kind == "slack" else (204, {})

    def problem(self, body: Any) -> str | None:
        try:
            CHECKS[self.kind](body)
        except (AssertionError, KeyError, TypeError) as exc:
            return f"{type(exc).__name__} {exc}"[:200]
        return None

    @property
    def url(self) -> str:
        path = "services/T000/B000" if self.kind == "slack" else "api/webhooks/123"
        return f"http://127.0.0.1:{self.port}/{path}/{TOKEN}"

    def bodies(self) -> list[Any]:
        """The messages it accepted (a 429's or 500's body was not delivered)."""
        return [r.body for r in self.requests if 200 <= r.status < 300]

    def summary(self, body: Any) -> str:
        """One line for a person: which webhook, the message's plain text, its shape."""
        problem = self.problem(body)
        shape = f"  [NOT what the {self.kind} API accepts: {problem}]" if problem else ""
        key = "text" if self.kind == "slack" else "content"
        text = body.get(key, "") if isinstance(body, dict) else body
        return f"  {self.kind:>7} ← {one_line(str(text), 160)}{shape}"

    def down(self) -> None:
        """Closes the port: a request finds nothing listening (connection refused)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def wait_for(self, count: int, timeout: float = 30) -> list[Any]:
        """The accepted messages, once there are ``count`` (or ``timeout`` passed)."""
        deadline = time.monotonic() + timeout
        while len(self.bodies()) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.bodies()


# --- what the webhook APIs accept ----------------------------------------------------------------

SLACK_TOP = {"text", "blocks", "attachments", "thread_ts", "mrkdwn", "unfurl_links", "unfurl_media"}
SLACK_BLOCK_TYPES = {"section", "header", "context", "divider", "actions", "image", "rich_text"}


def _text_object(obj: Any, kinds: set[str], limit: int) -> None:
    assert isinstance(obj, dict) and obj.get("type") in kinds, obj
    assert isinstance(obj["text"], str) and 1 <= len(obj["text"]) <= limit, obj
    assert set(obj) <= {"type", "text", "emoji", "verbatim"}, obj


def _slack_blocks(blocks: Any) -> None:
    assert isinstance(blocks, list) and len(blocks) <= 50, blocks
    for block in blocks:
        assert block["type"] in SLACK_BLOCK_TYPES, block
        if block["type"] == "header":
            assert set(block) <= {"type", "text", "block_id"}
            _text_object(block["text"], {"plain_text"}, 150)
        elif block["type"] == "section":
            assert set(block) <= {"type", "text", "fields", "block_id", "accessory"}, block
            assert "text" in block or "fields" in block, block
            if "text" in block:
                _text_object(block["text"], {"mrkdwn", "plain_text"}, 3000)
            fields = block.get("fields", [])
            assert isinstance(fields, list) and len(fields) <= 10, fields
            for f in fields:
                _text_object(f, {"mrkdwn", "plain_text"}, 2000)
        elif block["type"] == "context":
            assert 1 <= len(block["elements"]) <= 10, block
            for e in block["elements"]:
                _text_object(e, {"mrkdwn", "plain_text"}, 3000)


def check_slack(body: Any) -> None:
    """An incoming webhook's body as Slack's API accepts it (Block Kit reference limits)."""
    assert isinstance(body, dict) and set(body) <= SLACK_TOP, body
    assert isinstance(body.get("text"), str) and body["text"], "the notification fallback text"
    _slack_blocks(body.get("blocks", []))
    total = len(body.get("blocks", []))
    for att in body.get("attachments", []):
        assert set(att) <= {"color", "blocks", "fallback", "text", "fields"}, att
        assert isinstance(att.get("color", "#000000"), str)
        assert len(att.get("color", "#000000")) == 7 and att.get("color", "#")[0] == "#"
        _slack_blocks(att.get("blocks", []))
        total += len(att.get("blocks", []))
    assert total <= 50


DISCORD_TOP = {"content", "username", "avatar_url", "tts", "embeds", "allowed_mentions", "flags"}
EMBED_KEYS = {
    "title", "type", "description", "url", "timestamp", "color", "footer", "image",
    "thumbnail", "video", "provider", "author", "fields",
}  # fmt: skip


def check_discord(body: Any) -> None:
    """A webhook body as Discord's Execute Webhook accepts it (its embed limits)."""
    assert isinstance(body, dict) and set(body) <= DISCORD_TOP, body
    assert body.get("content") or body.get("embeds"), "a message needs content or an embed"
    assert len(body.get("content", "")) <= 2000
    embeds = body.get("embeds", [])
    assert isinstance(embeds, list) and len(embeds) <= 10
    total = 0
    for e in embeds:
        assert set(e) <= EMBED_KEYS, e
        assert len(e.get("title", "")) <= 256 and len(e.get("description", "")) <= 4096
        assert isinstance(e.get("color", 0), int) and 0 <= e.get("color", 0) <= 0xFFFFFF
        fields = e.get("fields", [])
        assert len(fields) <= 25
        for f in fields:
            assert set(f) <= {"name", "value", "inline"}, f
            assert 1 <= len(f["name"]) <= 256 and 1 <= len(f["value"]) <= 1024, f
            assert isinstance(f.get("inline", False), bool)
        footer = e.get("footer", {}).get("text", "")
        assert len(footer) <= 2048
        total += len(e.get("title", "")) + len(e.get("description", "")) + len(footer)
        total += sum(len(f["name"]) + len(f["value"]) for f in fields)
    assert total <= 6000, total


CHECKS: dict[str, Callable[[Any], None]] = {"slack": check_slack, "discord": check_discord}


def text_of(body: Any) -> str:
    """Everything a person would read in a message, as one string."""
    return json.dumps(body, ensure_ascii=False)


def main(env_file: str) -> None:
    """``python -m tests.support.webhooks FILE``: a Slack and a Discord receiver for
    ``make demo``; writes their URLs to FILE as shell assignments, then prints one line per
    message until stopped."""
    slack, discord = Receiver("slack", echo=True), Receiver("discord", echo=True)
    Path(env_file).write_text(
        f"export DEMO_SLACK_WEBHOOK_URL={slack.url}\n"
        f"export DEMO_DISCORD_WEBHOOK_URL={discord.url}\n"
    )
    threading.Event().wait()


if __name__ == "__main__":
    main(sys.argv[1])
