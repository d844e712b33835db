"""The I/O of configuration: reads a deployments directory, the environment files and the
overlays of further apps, every file they name, and the app's templates; hands the pure schema
plain data and what it found (``Surroundings``), and the problems back as ConfigError."""

from __future__ import annotations

import os
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import ValidationError

from bascule import rbac
from bascule.apps import APPS_DIR, overlay, overlay_file
from bascule.config.base import (
    ENVIRONMENTS,
    Found,
    Surroundings,
    check_app_name,
    environment_file,
)
from bascule.config.environment import EnvironmentConfig
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
from bascule.rendered import RenderedObject
from bascule.workload import Workload, classify, from_templates
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


def environment_files(deployments_dir: Path) -> dict[str, Path]:
    """The environment files of a deployments directory: the required ones, then any others."""
    files = {name: deployments_dir / f"{name}.yaml" for name in ENVIRONMENTS}
    for extra in sorted(deployments_dir.glob("*.yaml")):
        files.setdefault(extra.stem, extra)
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
    """Load every environment of a deployments directory (dev, staging and production at least).

    Also checks what only shows across files: one app per directory, and no two environments
    deploying into the same namespace of the same cluster. ConfigError lists every problem of
    every file.
    """
    directory = Path(deployments_dir)
    problems: list[Problem] = []
    loaded: dict[str, tuple[EnvironmentConfig, YamlDocument]] = {}
    for name, path in environment_files(directory).items():
        if not path.exists():
            yml = path.with_suffix(".yml")
            hint = f"rename {yml.name} to {path.name}" if yml.exists() else "create it"
            problems.append(
                Problem(
                    display_path(path),
                    f"missing: a deployments directory needs {', '.join(ENVIRONMENTS)} — {hint}",
                )
            )
            continue
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
                holder[name] = str(directory / Path(value).expanduser())
            elif value is None and defaults and field.default is not None:
                holder[name] = str(directory / field.default)
    return out


def _surroundings(path: Path, data: dict[str, Any]) -> Surroundings:
    """What the validators need from outside the file, read now: the schema reads no files."""
    paths: dict[Path, Found] = {}
    for field in path_fields():
        value: Any = data
        for part in field.loc:
            value = value.get(part) if isinstance(value, dict) else None
        if not isinstance(value, str):
            continue
        where = Path(value)
        kind: Literal["file", "dir", "missing"] = (
            "file" if where.is_file() else "dir" if where.is_dir() else "missing"
        )
        text = where.read_text() if field.read and kind == "file" else None
        paths[where] = Found(display_path(where), kind, text)
    beside = frozenset(p.stem for p in path.parent.glob("*.yaml") if p.is_file())
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


def load_templates(directory: str | Path) -> Templates:
    """Read ``deployment.yaml`` and ``service.yaml`` from ``directory`` (an environment's
    `manifests:`); ConfigError, listing the problems of both, if unusable."""
    base = Path(directory)
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


def load_rendered(directory: str | Path) -> list[RenderedObject]:
    """The objects of a manifests directory: ``deployment.yaml`` and ``service.yaml``, checked
    as ``load_templates`` does, then every document of its other YAML files. ConfigError
    listing the problems. (The adapter from today's two templates; the manifest sources
    replace it.)"""
    base = Path(directory)
    templates = load_templates(base)
    objects = from_templates(templates, display_path(base))
    problems: list[Problem] = []
    for file in sorted([*base.glob("*.yaml"), *base.glob("*.yml")]):
        if file.name in (DEPLOYMENT_TEMPLATE, SERVICE_TEMPLATE):
            continue
        shown = display_path(file)
        try:
            loader = yaml.SafeLoader(file.read_text(encoding="utf-8"))
            try:
                while loader.check_node():
                    node = loader.get_node()
                    if node is None:
                        continue
                    data = loader.construct_document(node)
                    if data is not None:
                        origin = f"{shown}:{node.start_mark.line + 1}"
                        objects.append(RenderedObject(data, origin))
            finally:
                loader.dispose()
        except yaml.YAMLError as exc:
            problems.append(Problem(shown, f"not YAML: {exc} — fix the YAML syntax"))
        except (OSError, UnicodeDecodeError) as exc:
            problems.append(Problem(shown, f"cannot read the file: {exc}"))
    if problems:
        raise ConfigError(problems)
    return objects


def load_workload(cfg: EnvironmentConfig, config_file: str) -> Workload:
    """The environment's manifests, sorted by how Bascule runs them (``bascule.workload``);
    ConfigError naming each object it refuses and why (and ``config_file``, the environment
    file, for a `workload:` choice that names none)."""
    return classify(load_rendered(cfg.manifests), cfg.workload, cfg.namespace, config_file)


# The shipped Roles: what preflight checks is what `bascule rbac` gives the clusters.
RBAC_DIR = Path(__file__).resolve().parents[1] / "deployments" / "rbac"
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
                f"{path}: cannot read Bascule's Role definition ({exc.strerror}) — run from a "
                "checkout of the repository, which ships deployments/rbac/"
            ) from None
        out += rbac.parse_roles(text, str(path))
    return tuple(out)
