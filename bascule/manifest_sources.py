"""Renders an app's `manifests:` into its Kubernetes objects: reads a directory of plain YAML, or
runs `kubectl kustomize` or `helm template` on a Kustomize directory or a Helm chart.

Configuration runs no code and fetches nothing: every kustomization is checked before kustomize
runs (``bascule.source_rules`` says what is refused), kustomize runs with its plugins, its Helm
inflator and its network off, and helm renders a chart whose dependencies are vendored, with
an empty home of its own (no repositories, no plugins). Every file rendering reads must be in
the app's repository: the Git work tree holding the manifests (the manifests directory itself
outside one).

The binaries are the worker's, never the app's: ``$BASCULE_KUBECTL`` and ``$BASCULE_HELM`` if
set, else ``kubectl`` and ``helm`` on PATH (scripts/build-helm.sh builds the helm Bascule is
tested with).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

from bascule.config import EnvironmentConfig, ManifestsConfig
from bascule.config_files import display_path, load_yaml_file
from bascule.errors import OperationFailed, UsageError
from bascule.redact import clip
from bascule.rendered import RenderedObject
from bascule.source_rules import (
    CHART_FILE,
    CHART_REQUIREMENTS,
    CHARTS_DIR,
    SourceKind,
    chart_dependency_problems,
    detect_kind,
    helm_origins,
    kustomization_file,
    kustomization_references,
    kustomize_origins,
    missing_message,
    objects_of,
    outside_message,
    plain_files,
    plugin_problem,
    problem_at,
)
from bascule.workload import Workload, classify
from bascule.yamlsource import ConfigError, Problem, YamlDocument, parse_yaml_stream

KUBECTL_ENV = "BASCULE_KUBECTL"
HELM_ENV = "BASCULE_HELM"
RENDER_TIMEOUT_SECONDS = 120
_ERROR_CHARS = 1500  # of a tool's error output, in a message


def render_environment(cfg: EnvironmentConfig) -> list[RenderedObject]:
    """The objects of an environment's `manifests:`, rendered for its app and namespace."""
    return render_manifests(
        cfg.manifests, release=cfg.manifests.release or cfg.app, namespace=cfg.namespace
    )


def load_workload(cfg: EnvironmentConfig, config_file: str) -> Workload:
    """The environment's manifests rendered and sorted by how Bascule runs them
    (``bascule.workload``); ConfigError naming each object it refuses and why (and
    ``config_file``, the environment file, for a `workload:` choice that names none)."""
    return classify(render_environment(cfg), cfg.workload, cfg.namespace, config_file)


def render_manifests(
    source: ManifestsConfig, *, release: str, namespace: str, root: Path | None = None
) -> list[RenderedObject]:
    """Every object of ``source``, in order. ConfigError (each problem with its file, line and
    what to do) when a file or the source cannot be rendered, or is refused; UsageError when
    the tool it needs is not installed. Changes nothing.

    ``root``: the app's repository, which every file read must be in, the manifests directory
    and the values files too (default: ``app_root`` of the manifests directory)."""
    directory = source.path
    shown = display_path(directory)
    if not directory.is_dir():
        raise ConfigError(
            [Problem(shown, "the manifests directory does not exist — create it or fix `path:`")]
        )
    kind = source_kind(source)
    root = (root or app_root(directory)).resolve()
    _raise_any(
        [
            Problem(display_path(path), outside_message(display_path(path), str(root)))
            for path in (directory, *source.values)
            if not path.resolve().is_relative_to(root)
        ]
    )
    if kind == "plain":
        return _render_plain(directory, root)
    if kind == "kustomize":
        return _render_kustomize(directory, root)
    return _render_helm(source, root, release=release, namespace=namespace)


def source_kind(source: ManifestsConfig) -> SourceKind:
    """``source``'s kind as written, else as its directory's files say."""
    return source.kind or detect_kind(_names(source.path))


def app_root(directory: Path) -> Path:
    """The app's repository, which every file rendering reads must be in: the Git work tree
    holding ``directory``, else ``directory`` itself. Resolved (symbolic links followed)."""
    start = directory.resolve()
    return next((d for d in (start, *start.parents) if (d / ".git").exists()), start)


def tool(name: str, variable: str, purpose: str) -> str:
    """The path of the worker's ``name`` binary: ``$variable`` if set, else ``name`` on PATH;
    UsageError saying how to get one if there is none."""
    configured = os.environ.get(variable)
    if configured:
        if not (os.path.isfile(configured) and os.access(configured, os.X_OK)):
            raise UsageError(
                f"{variable}={configured} is not an executable file — set it to the path of "
                f"{name}, or unset it to use the {name} on PATH"
            )
        return configured
    found = shutil.which(name)
    if found is None:
        raise UsageError(
            f"{name} is not installed (not on PATH): {purpose} needs it — install it on the "
            f"machine that renders the manifests (the worker's, for a deploy) or set {variable} "
            "to its path"
        )
    return found


# --- plain -------------------------------------------------------------------------------------


def _render_plain(directory: Path, root: Path) -> list[RenderedObject]:
    files = plain_files(_names(directory))
    if not files:
        raise ConfigError(
            [
                Problem(
                    display_path(directory),
                    "holds no *.yaml or *.yml file — add the app's manifests, one or more "
                    "objects per file",
                )
            ]
        )
    problems: list[Problem] = []
    docs: list[YamlDocument] = []
    for name in files:
        path = directory / name
        if not path.resolve().is_relative_to(root):
            problems.append(Problem(display_path(path), outside_message(name, str(root))))
            continue
        try:
            docs += parse_yaml_stream(_read(path), display_path(path))
        except ConfigError as exc:
            problems.extend(exc.problems)
    objects, more = objects_of(docs)
    _raise_any(problems + more)
    return objects


# --- Kustomize ---------------------------------------------------------------------------------

# Everything that would run code or fetch: plugins (exec and container functions among them),
# the Helm chart inflator, a function's network. The load restrictor is kustomize's default,
# said here so that no configuration of the machine loosens it.
KUSTOMIZE_FLAGS = (
    "--enable-alpha-plugins=false",
    "--enable-helm=false",
    "--network=false",
    "--load-restrictor=LoadRestrictionsRootOnly",
)


def _render_kustomize(directory: Path, root: Path) -> list[RenderedObject]:
    _raise_any(kustomization_problems(directory, root))
    kubectl = tool("kubectl", KUBECTL_ENV, "a Kustomize directory (kubectl kustomize)")
    shown = display_path(directory)
    out = _run([kubectl, "kustomize", str(directory), *KUSTOMIZE_FLAGS], shown, "kustomization")
    docs = _parse_output(out, f"kubectl kustomize {shown}", shown)
    objects, problems = objects_of(docs, kustomize_origins(docs, shown))
    _raise_any(problems)
    return objects


def kustomization_problems(directory: Path, root: Path) -> list[Problem]:
    """What kustomize would fetch, run or read outside ``root`` in the kustomization of
    ``directory`` and every local one it names, each at its file and key."""
    problems: list[Problem] = []
    pending, seen = [directory.resolve()], set[Path]()
    while pending:
        here = pending.pop()
        if here in seen:
            continue
        seen.add(here)
        name = kustomization_file(_names(here))
        if name is None:
            continue  # a directory of resources without one: kustomize says so
        try:
            doc = load_yaml_file(here / name)
        except ConfigError as exc:
            problems.extend(exc.problems)
            continue
        refs, found = kustomization_references(doc)
        problems += found
        for ref in refs:
            target = here / ref.path
            if not target.resolve().is_relative_to(root):
                problems.append(problem_at(doc, ref.loc, outside_message(ref.path, str(root))))
            elif not target.exists():
                problems.append(problem_at(doc, ref.loc, missing_message(ref.path)))
            elif ref.role == "resource" and target.is_dir():
                pending.append(target.resolve())
            elif ref.role == "plugin" and target.is_dir():
                message = f"{ref.path!r} is a directory: name each plugin configuration file"
                problems.append(problem_at(doc, ref.loc, message))
            elif ref.role == "plugin":
                try:
                    configs = parse_yaml_stream(_read(target), display_path(target))
                except ConfigError as exc:
                    problems.extend(exc.problems)
                    continue
                problems += [
                    problem_at(doc, ref.loc, f"{ref.path}: {why}")
                    for config in configs
                    if (why := plugin_problem(config.data)) is not None
                ]
    return problems


# --- Helm --------------------------------------------------------------------------------------


def _render_helm(
    source: ManifestsConfig, root: Path, *, release: str, namespace: str
) -> list[RenderedObject]:
    chart = source.path
    _raise_any(chart_problems(chart, root))
    helm = tool("helm", HELM_ENV, "a Helm chart (helm template)")
    shown = display_path(chart)
    argv = [helm, "template", release, str(chart), "--namespace", namespace, "--skip-tests"]
    argv += [f"--values={v}" for v in source.values]
    # A home of its own: no repository, registry login or plugin of the machine's is used.
    with tempfile.TemporaryDirectory(prefix="bascule-helm-") as home:
        env = {
            "HELM_CACHE_HOME": f"{home}/cache",
            "HELM_CONFIG_HOME": f"{home}/config",
            "HELM_DATA_HOME": f"{home}/data",
            "HELM_PLUGINS": f"{home}/plugins",
        }
        out = _run(argv, shown, "chart or its values", env)
    docs = _parse_output(out, f"helm template {shown}", shown)
    objects, problems = objects_of(docs, helm_origins(out, docs, shown))
    _raise_any(problems)
    return objects


def chart_problems(chart: Path, root: Path) -> list[Problem]:
    """What helm would need to fetch for ``chart`` (dependencies not vendored under charts/),
    and the files of the chart that lead outside ``root``."""
    problems: list[Problem] = []
    vendored = _names(chart / CHARTS_DIR) if (chart / CHARTS_DIR).is_dir() else frozenset()
    for name in (CHART_FILE, CHART_REQUIREMENTS):
        if name == CHART_FILE or (chart / name).is_file():
            try:
                problems += chart_dependency_problems(load_yaml_file(chart / name), vendored)
            except ConfigError as exc:
                problems.extend(exc.problems)
    for path in sorted(chart.rglob("*")):
        if path.is_symlink() and not path.resolve().is_relative_to(root):
            written = str(path.relative_to(chart))
            problems.append(Problem(display_path(path), outside_message(written, str(root))))
    return problems


# --- shared ------------------------------------------------------------------------------------


def _names(directory: Path) -> frozenset[str]:
    try:
        return frozenset(p.name for p in directory.iterdir())
    except OSError as exc:
        raise ConfigError([Problem(display_path(directory), f"cannot list it: {exc}")]) from None


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([Problem(display_path(path), f"cannot read the file: {exc}")]) from None


def _run(argv: Sequence[str], shown: str, fix: str, env: dict[str, str] | None = None) -> str:
    """The output of a rendering tool; ConfigError with its error output if it fails."""
    base = {"PATH": os.environ.get("PATH", os.defpath), "HOME": tempfile.gettempdir()}
    try:
        done = subprocess.run(
            list(argv),
            capture_output=True,
            text=True,
            timeout=RENDER_TIMEOUT_SECONDS,
            env=base | (env or {}),
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise OperationFailed(
            f"{shown}: {Path(argv[0]).name} {argv[1]} took longer than "
            f"{RENDER_TIMEOUT_SECONDS} s — render it by hand to see why"
        ) from None
    except OSError as exc:
        raise UsageError(f"{shown}: cannot run {argv[0]}: {exc}") from None
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).splitlines()
        said = clip(" ".join(line.strip() for line in lines if line.strip()), _ERROR_CHARS)
        raise ConfigError(
            [
                Problem(
                    shown,
                    f"{Path(argv[0]).name} {argv[1]} failed (exit {done.returncode}): {said} "
                    f"— fix the {fix}",
                )
            ]
        )
    return done.stdout


def _parse_output(text: str, file: str, shown: str) -> list[YamlDocument]:
    try:
        return parse_yaml_stream(text, file)
    except ConfigError as exc:
        raise ConfigError(
            [Problem(shown, f"its rendered output is not YAML: {p}") for p in exc.problems]
        ) from None


def _raise_any(problems: Sequence[Problem]) -> None:
    if problems:
        raise ConfigError(list(dict.fromkeys(problems)))
