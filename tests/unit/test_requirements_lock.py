"""requirements.lock (`make lock`) matches pyproject.toml and is one that
`pip install --require-hashes -r requirements.lock` accepts: no network needed."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parents[2]
LOCK = REPO / "requirements.lock"
FROM_PROJECT = "bascule (pyproject.toml)"
FROM_BUILD = "bascule (pyproject.toml::build-system.requires)"
STALE = "requirements.lock is out of date with pyproject.toml: run `make lock` and commit it"


@dataclass
class Pin:
    line: int
    requirement: str
    hashes: list[str] = field(default_factory=list)
    via: str = ""  # pip-compile's comment: who asked for the package


def pins() -> dict[str, Pin]:
    """The lock's entries by package name, each line continuation joined."""
    found: dict[str, Pin] = {}
    current: Pin | None = None
    lines = LOCK.read_text().splitlines()
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#"):
            if current is not None:
                current.via += line.lstrip("# ") + "\n"
            continue
        if raw.startswith(" "):  # the hashes under a requirement
            assert current is not None, f"requirements.lock:{number}: {raw!r} belongs to nothing"
            current.hashes += re.findall(r"--hash=(\S+)", line)
            continue
        assert not line.startswith("-"), f"requirements.lock:{number}: option {line!r}"
        current = Pin(number, line.removesuffix("\\").strip())
        name = canonicalize_name(Requirement(current.requirement).name)
        assert name not in found, f"requirements.lock:{number}: {name} twice"
        found[name] = current
    return found


def project() -> tuple[list[Requirement], list[Requirement]]:
    data = tomllib.loads((REPO / "pyproject.toml").read_text())
    return (
        [Requirement(r) for r in data["project"]["dependencies"]],
        [Requirement(r) for r in data["build-system"]["requires"]],
    )


def test_every_requirement_is_pinned_with_hashes() -> None:
    """What --require-hashes asks of each line: one exact version and its hashes."""
    locked = pins()
    assert len(locked) > 20, "the lock holds the dependencies' dependencies too"
    for name, pin in locked.items():
        req = Requirement(pin.requirement)
        (spec,) = req.specifier
        assert spec.operator == "==" and "*" not in spec.version, (
            f"requirements.lock:{pin.line}: {name} is not pinned to one version"
        )
        assert not req.extras and req.url is None, f"requirements.lock:{pin.line}: {name}"
        assert pin.hashes, f"requirements.lock:{pin.line}: {name} has no hash"
        for digest in pin.hashes:
            assert re.fullmatch(r"sha256:[0-9a-f]{64}", digest), f"{name}: {digest}"


def test_lock_matches_pyproject() -> None:
    """Each direct and build dependency is locked at a version its range allows, and the
    lock names no direct dependency pyproject.toml dropped."""
    locked = pins()
    dependencies, build = project()
    for origin, wanted in ((FROM_PROJECT, dependencies), (FROM_BUILD, build)):
        names = {canonicalize_name(r.name) for r in wanted}
        for req in wanted:
            pin = locked.get(canonicalize_name(req.name))
            assert pin is not None, f"{req.name} is not in the lock. {STALE}"
            version = Version(next(iter(Requirement(pin.requirement).specifier)).version)
            assert req.specifier.contains(version, prereleases=True), (
                f"requirements.lock:{pin.line}: {pin.requirement} is outside {req}. {STALE}"
            )
            assert origin in pin.via, f"requirements.lock:{pin.line}: not from {origin}. {STALE}"
        direct = {name for name, pin in locked.items() if origin + "\n" in pin.via}
        assert direct <= names, f"locked for {origin} but no longer wanted: {direct - names}"


def test_workflow_installs_from_the_lock() -> None:
    text = (REPO / ".github" / "workflows" / "_deploy.yml").read_text()
    assert "pip install --disable-pip-version-check --require-hashes -r requirements.lock" in text
    assert "pip install --disable-pip-version-check --no-deps --no-build-isolation ." in text
