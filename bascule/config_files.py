"""The I/O of configuration: reads a deployments directory, the environment files and the
overlays of further apps, every file they name, and the app's templates; hands the pure schema
plain data and what it found (``Surroundings``), and the problems back as ConfigError."""

from __future__ import annotations

import os
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any, Literal

from pydantic import ValidationError

from bascule import rbac
from bascule.apps import APPS_DIR, overlay, overlay_file
from bascule.config.base import (
    ENVIRONMENT_SUFFIX,
    Found,
    Surroundings,
    check_app_name,
    check_environment_name,
    environment_file,
    environment_order,
)
from bascule.config.environment import EnvironmentConfig
from bascule.config.manifests import ManifestsConfig
from bascule.config.problems import (
    Layers,
    cross_file_problems,
    mapping_of,
    overlay_problem,
    secret_warnings,
    signers_problem,
    validation_problems,
)
from bascule.config.schema import path_fields
from bascule.errors import UsageError
from bascule.manifests import DEPLOYMENT_TEMPLATE, SERVICE_TEMPLATE, Templates, checked_templates
from bascule.yamlsource import ConfigError, Problem, YamlDocument, parse_yaml


def display_path(path: str | os.PathLike[str]) -> str:
    """A path as people should read it: relative to the working directory if inside it."""
    p = Path(path)
    if p.is_absolute():
        try:
            return str(p.relative_to(Path.cwd()))
        except ValueError:
            return str(p)
    return str(p)


def load_yaml_file(path: str | os.PathLike[str]) -> YamlDocument:
    """Read and parse a YAML file; a missing or unreadable file is a ConfigError too."""
    shown = display_path(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([Problem(shown, "file not found — create it")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([Problem(shown, f"cannot read the file: {exc}")]) from None
    return parse_yaml(text, shown)


def scan_environments(deployments_dir: str | Path) -> tuple[dict[str, Path], list[Problem]]:
    """The environments of a deployments directory, its top-level ``<name>.yaml`` files, by
    name in ``environment_order``; and a problem for each top-level YAML file that cannot be
    one (so that it is not silently left out), or for a directory without any."""
    directory = Path(deployments_dir)
    shown = display_path(directory)
    if not directory.is_dir():
        return {}, [Problem(shown, "no such directory — give the deployments directory (--dir)")]
    found: dict[str, Path] = {}
    problems: list[Problem] = []
    # Hidden files (an editor's `.#dev.yaml`) are nobody's configuration.
    for path in sorted(p for p in directory.iterdir() if p.is_file() and p.name[0] != "."):
        if path.suffix == ".yml":
            message = (
                f"an environment file is <name>{ENVIRONMENT_SUFFIX} — rename it to "
                f"{path.stem}{ENVIRONMENT_SUFFIX}, or move it out of the top of {shown}"
            )
            problems.append(Problem(display_path(path), message))
        elif path.suffix == ENVIRONMENT_SUFFIX:
            try:
                found[check_environment_name(path.stem)] = path
            except UsageError as exc:
                message = (
                    f"{exc}: each *{ENVIRONMENT_SUFFIX} file at the top of {shown} is an "
                    "environment — rename it, or move it into a subdirectory"
                )
                problems.append(Problem(display_path(path), message))
    if not found and not problems:
        problems.append(
            Problem(
                shown,
                f"no environment files — add one <name>{ENVIRONMENT_SUFFIX} per environment "
                "(`bascule validate --schema` lists the keys; deployments/dev.yaml is an example)",
            )
        )
    return {name: found[name] for name in environment_order(found)}, problems


def environment_files(deployments_dir: str | Path) -> dict[str, Path]:
    """``scan_environments``' files; ConfigError listing its problems if it found any."""
    files, problems = scan_environments(deployments_dir)
    if problems:
        raise ConfigError(problems)
    return files


def load_environment(path: str | Path, app: str | None = None) -> EnvironmentConfig:
    """Load and validate one environment file, for its own app or (``app``) for one of its
    further apps, whose overlay file is laid over it; ConfigError lists every problem."""
    return _load(Path(path), app)[0]


def app_names(deployments_dir: str | Path, environment: str) -> list[str]:
    """The apps of an environment: the environment file's own first, then those with an
    overlay file for it, by name. ConfigError if the environment file cannot be read."""
    directory = Path(deployments_dir)
    default = _load(environment_file(directory, environment))[0].app
    extra = sorted(
        p.parent.name
        for p in directory.glob(f"{APPS_DIR}/*/{environment}.yaml")
        if p.parent.name != default
    )
    return [default, *extra]


def load_apps(
    deployments_dir: str | Path, environments: Sequence[str]
) -> dict[Path, EnvironmentConfig]:
    """Every overlay file of these environments, loaded over its environment file, by path.

    ConfigError lists every problem of every overlay (an environment file's own problems are
    ``load_all``'s to report). Overlay files of no such environment are problems too.
    """
    directory = Path(deployments_dir)
    problems: list[Problem] = []
    loaded: dict[Path, EnvironmentConfig] = {}
    envs = set(environments)
    for path in sorted(directory.glob(f"{APPS_DIR}/*/*.yaml")):
        app, environment = path.parent.name, path.stem
        if environment not in envs:
            if not (directory / f"{environment}.yaml").exists():
                problems.append(
                    Problem(
                        display_path(path),
                        f"there is no environment {environment!r} ({environment}.yaml in "
                        f"{display_path(directory)}) — rename the file after one",
                    )
                )
            continue
        base = directory / f"{environment}.yaml"
        try:
            loaded[path] = _load(base, app)[0]
        except ConfigError as exc:
            try:
                _load(base)
                own: set[Problem] = set()
            except ConfigError as base_exc:
                own = set(base_exc.problems)
            problems.extend(p for p in exc.problems if p not in own)
    if problems:
        raise ConfigError(problems)
    return loaded


def load_all(deployments_dir: str | Path) -> dict[str, EnvironmentConfig]:
    """Load every environment of a deployments directory (``scan_environments``), in its order.

    Also checks what only shows across files: one app per directory, and no two environments
    deploying into the same namespace of the same cluster. ConfigError lists every problem of
    every file, and of the directory's file names.
    """
    files, problems = scan_environments(deployments_dir)
    loaded: dict[str, tuple[EnvironmentConfig, YamlDocument]] = {}
    for name, path in files.items():
        try:
            cfg, layers = _load(path)
            loaded[name] = cfg, layers.base
        except ConfigError as exc:
            problems.extend(exc.problems)
    problems.extend(cross_file_problems(loaded))
    if problems:
        raise ConfigError(problems)
    return {name: cfg for name, (cfg, _) in loaded.items()}


def _anchored(data: dict[str, Any], directory: Path, *, defaults: bool = False) -> dict[str, Any]:
    """``data`` with its paths made absolute from ``directory`` (``~`` expanded): each file's
    paths are relative to that file, an overlay's to the overlay. With ``defaults``, a path
    left out is its field's default, relative to ``directory`` too."""
    out = dict(data)
    for field in path_fields():
        holder: Any = out
        for part in field.loc[:-1]:
            if not isinstance(holder.get(part), dict):
                break
            holder[part] = holder = dict(holder[part])
        else:
            name = field.loc[-1]
            value = holder.get(name)
            if isinstance(value, str):
                holder[name] = _under(directory, value)
            elif field.many and isinstance(value, list):
                holder[name] = [_under(directory, v) if isinstance(v, str) else v for v in value]
            elif value is None and defaults and field.default is not None:
                holder[name] = str(directory / field.default)
    return out


def _under(directory: Path, value: str) -> str:
    return str(directory / Path(value).expanduser())


def _found(where: Path, *, read: bool) -> Found:
    kind: Literal["file", "dir", "missing"] = (
        "file" if where.is_file() else "dir" if where.is_dir() else "missing"
    )
    text = where.read_text() if read and kind == "file" else None
    entries = frozenset(p.name for p in where.iterdir()) if kind == "dir" else frozenset()
    return Found(display_path(where), kind, text, entries)


def _surroundings(path: Path, data: dict[str, Any]) -> Surroundings:
    """What the validators need from outside the file, read now: the schema reads no files."""
    paths: dict[Path, Found] = {}
    for field in path_fields():
        value: Any = data
        for part in field.loc:
            value = value.get(part) if isinstance(value, dict) else None
        values = value if field.many and isinstance(value, list) else [value]
        for where in (Path(v) for v in values if isinstance(v, str)):
            paths[where] = _found(where, read=field.read)
    # The valid ones only: a badly named file beside is `bascule validate`'s to report.
    beside = frozenset(scan_environments(path.parent)[0])
    return Surroundings(environment=path.stem, environments=beside, paths=paths)


def _load(path: Path, app: str | None = None) -> tuple[EnvironmentConfig, Layers]:
    doc = load_yaml_file(path)
    data = mapping_of(doc)
    layers = Layers(doc)
    if app is not None and app == data.get("app"):
        stray = overlay_file(path.parent, app, path.stem)
        if stray.is_file():
            raise ConfigError(
                [
                    Problem(
                        display_path(stray),
                        f"{app} is {path.name}'s own app, whose settings are that file's — "
                        f"move them there and remove this file",
                    )
                ]
            )
    elif app is not None:
        over_path = overlay_file(path.parent, app, path.stem)
        try:  # before the name becomes a path that is read
            check_app_name(app)
        except ValueError as exc:
            message = f"{exc} — rename the directory {APPS_DIR}/{app}/"
            raise ConfigError([Problem(display_path(over_path), message)]) from None
        over_doc = load_yaml_file(over_path)
        over = mapping_of(over_doc, empty_ok=True)
        if (problem := overlay_problem(over_doc, over, app, path.name)) is not None:
            raise ConfigError([problem])
        data = overlay(data, {**_anchored(over, over_path.parent.absolute()), "app": app})
        layers = Layers(doc, over_doc)
    data = _anchored(data, path.parent.absolute(), defaults=True)
    surroundings = _surroundings(path, data)
    try:
        cfg = EnvironmentConfig.model_validate(data, context=surroundings)
    except ValidationError as exc:
        raise ConfigError(validation_problems(layers, exc)) from None
    if (problem := signers_problem(cfg, layers, surroundings)) is not None:
        raise ConfigError([problem])
    return cfg, layers


def exposed_secrets(path: str | Path, app: str | None = None) -> list[Problem]:
    """Warnings for a protected environment's secrets read from Prefect Secret blocks
    (``problems.secret_warnings``), for ``app``: its overlay laid over the file. ConfigError
    as ``load_environment``."""
    return secret_warnings(*_load(Path(path), app))


def load_templates(directory: str | Path | ManifestsConfig) -> Templates:
    """Read ``deployment.yaml`` and ``service.yaml`` from ``directory`` (an environment's
    `manifests:`, or its path); ConfigError, listing the problems of both, if unusable."""
    base = directory.path if isinstance(directory, ManifestsConfig) else Path(directory)
    problems: list[Problem] = []
    docs: list[YamlDocument] = []
    for name in (DEPLOYMENT_TEMPLATE, SERVICE_TEMPLATE):
        try:
            docs.append(load_yaml_file(base / name))
        except ConfigError as exc:
            problems.extend(exc.problems)
    if problems:
        raise ConfigError(problems)
    return checked_templates(docs[0], docs[1])


# The shipped Roles: what preflight checks is what `bascule rbac` gives the clusters. In the
# package (bascule/roles links to the repository's deployments/rbac), so an installed Bascule
# has them too.
RBAC_DIR = Path(__file__).resolve().parent / "roles"
RBAC_FILES = ("deployer.yaml", "secrets.yaml", "promote-source.yaml")


@cache
def shipped_roles() -> tuple[rbac.RoleDef, ...]:
    """The Roles of ``RBAC_DIR``, placeholders unfilled (read once per process)."""
    out: list[rbac.RoleDef] = []
    for name in RBAC_FILES:
        path = RBAC_DIR / name
        try:
            text = path.read_text()
        except OSError as exc:
            raise UsageError(
                f"{path}: cannot read Bascule's Role definition ({exc.strerror}) — reinstall "
                "Bascule: its package ships them (bascule/roles)"
            ) from None
        out += rbac.parse_roles(text, str(path))
    return tuple(out)
