"""The app's own smoke suite, run as a Kubernetes Job from the app's image after a deploy.

    python3 -m sampleapp.smoke --url http://host:port [--expect-version v2] [--skip-items]

Prints one result line per check and exits 1 if any failed (2 on bad usage).
FAIL_SMOKE=1 in the environment adds a check that always fails, to test a failing smoke run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

Check = Callable[[int, bytes], str | None]  # (status, body) -> failure reason, or None if good


@dataclass(frozen=True)
class Result:
    name: str
    ok: bool
    detail: str
    millis: int

    def line(self) -> str:
        return f"{'PASS' if self.ok else 'FAIL'} {self.name} ({self.millis} ms): {self.detail}"


def fetch(url: str, timeout: float) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers={"User-Agent": "sampleapp-smoke"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def expect_status(expected: int) -> Check:
    def check(status: int, body: bytes) -> str | None:
        if status != expected:
            return (
                f"status {status}, want {expected}: {body[:200].decode(errors='replace').strip()}"
            )
        return None

    return check


def _json_body(status: int, body: bytes) -> tuple[Any, str | None]:
    if status != 200:
        return None, f"status {status}: {body[:200].decode(errors='replace').strip()}"
    try:
        return json.loads(body), None
    except ValueError:
        return None, f"not JSON: {body[:200]!r}"


def check_version(expected: str | None) -> Check:
    def check(status: int, body: bytes) -> str | None:
        value, problem = _json_body(status, body)
        if problem:
            return problem
        if not isinstance(value, dict) or not isinstance(value.get("version"), str):
            return f"no version in {value!r}"
        if expected is not None and value["version"] != expected:
            return f"version {value['version']!r}, want {expected!r}"
        return None

    return check


def check_items(status: int, body: bytes) -> str | None:
    value, problem = _json_body(status, body)
    if problem:
        return problem
    if not isinstance(value, list):
        return f"want a JSON list, got {type(value).__name__}"
    return None


def plan(expect_version: str | None, items: bool) -> list[tuple[str, str, Check]]:
    checks: list[tuple[str, str, Check]] = [
        ("healthz", "/healthz", expect_status(200)),
        ("readyz", "/readyz", expect_status(200)),
        ("version", "/version", check_version(expect_version)),
    ]
    if items:
        checks.append(("items", "/api/items", check_items))
    return checks


def run(
    base_url: str,
    checks: Sequence[tuple[str, str, Check]],
    timeout: float,
    get: Callable[[str, float], tuple[int, bytes]] = fetch,
) -> list[Result]:
    results = []
    for name, path, check in checks:
        begin = time.monotonic()
        try:
            status, body = get(base_url.rstrip("/") + path, timeout)
            problem = check(status, body)
        except (OSError, urllib.error.URLError) as exc:
            problem = f"request failed: {exc}"
        millis = int((time.monotonic() - begin) * 1000)
        results.append(Result(name, problem is None, problem or "ok", millis))
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python3 -m sampleapp.smoke", description="Smoke-test a sample app."
    )
    parser.add_argument("--url", required=True, help="base URL, e.g. http://my-app-preview:8080")
    parser.add_argument("--expect-version", help="fail unless /version reports this version")
    parser.add_argument("--skip-items", action="store_true", help="do not check /api/items")
    parser.add_argument(
        "--timeout", type=float, default=5.0, help="seconds per request (default 5)"
    )
    args = parser.parse_args(argv)

    results = run(args.url, plan(args.expect_version, not args.skip_items), args.timeout)
    if os.environ.get("FAIL_SMOKE", "").strip().lower() in {"1", "true", "yes", "on"}:
        results.append(Result("forced", False, "FAIL_SMOKE is set", 0))
    for result in results:
        print(result.line(), flush=True)
    failed = sum(not r.ok for r in results)
    print(f"smoke: {len(results) - failed}/{len(results)} checks passed ({args.url})", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
