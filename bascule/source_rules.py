"""What an app's `manifests:` source is, and what it may hold: the pure rules.

Three kinds of source: a directory of plain YAML, a Kustomize directory and a Helm chart, told
apart by the files in the directory. Rendering one must run no code of the app's and fetch
nothing, so a kustomization naming a remote base, a file outside the app's repository or a plugin
that runs code is refused before kustomize runs, and so is a chart whose dependencies are not
vendored. ``bascule.manifest_sources`` reads the files and runs the tools; everything here decides
on plain data.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

from bascule.rendered import RenderedObject
from bascule.yamlsource import (
    ConfigError,
    Loc,
    Problem,
    YamlDocument,
    format_path,
    parse_yaml_stream,
)

SourceKind = Literal["plain", "kustomize", "helm"]
SOURCE_KINDS: tuple[SourceKind, ...] = get_args(SourceKind)

# The names kustomize reads a directory's kustomization from, in its order of preference.
KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
CHART_FILE = "Chart.yaml"
CHART_REQUIREMENTS = "requirements.yaml"  # where a Helm 2 (apiVersion v1) chart lists them
CHARTS_DIR = "charts"
YAML_SUFFIXES = (".yaml", ".yml")


def detect_kind(names: Collection[str]) -> SourceKind:
    """The kind of source a directory holding files ``names`` is."""
    if kustomization_file(names) is not None:
        return "kustomize"
    if CHART_FILE in names:
        return "helm"
    return "plain"


def kustomization_file(names: Collection[str]) -> str | None:
    """The file kustomize would read in a directory holding ``names``, if any."""
    return next((name for name in KUSTOMIZATION_FILES if name in names), None)


def kind_mismatch(kind: SourceKind, names: Collection[str]) -> str | None:
    """Why a directory holding ``names`` cannot be a source of ``kind``, if it cannot."""
    detected = detect_kind(names)
    if kind == detected:
        return None
    if kind == "kustomize":
        return f"has no {' or '.join(KUSTOMIZATION_FILES)}"
    if kind == "helm":
        return f"has no {CHART_FILE}"
    what = "a kustomization" if detected == "kustomize" else "a Helm chart"
    return f"is {what}, not plain YAML: its templates would be applied as they are written"


def plain_files(names: Collection[str]) -> list[str]:
    """The files of a plain directory that are its manifests, in the order they apply."""
    return sorted(n for n in names if n.endswith(YAML_SUFFIXES) and not n.startswith("."))


# --- objects ---------------------------------------------------------------------------------


def objects_of(
    docs: Sequence[YamlDocument], origin: Mapping[int, str] | None = None
) -> tuple[list[RenderedObject], list[Problem]]:
    """The Kubernetes objects of parsed documents, in order, and the problems of those that are
    not one. ``origin``: by a document's index, what messages call it (default: file:line)."""
    objects: list[RenderedObject] = []
    problems: list[Problem] = []
    for i, doc in enumerate(docs):
        mark = doc.mark_of(())
        where = (origin or {}).get(i) or f"{doc.file}:{mark.line}"
        data = doc.data
        if not isinstance(data, dict):
            problems.append(
                Problem(
                    doc.file,
                    f"{where}: a document here is a {_yaml_type(data)}, not a Kubernetes object "
                    "— write one mapping with apiVersion, kind and metadata.name per document",
                    mark,
                )
            )
            continue
        missing = [k for k in ("apiVersion", "kind") if not isinstance(data.get(k), str)]
        if missing:
            problems.append(
                Problem(
                    doc.file,
                    f"{where}: a document without {' and '.join(missing)} is not a Kubernetes "
                    "object — add them",
                    mark,
                )
            )
            continue
        if str(data["kind"]).endswith("List") and isinstance(data.get("items"), list):
            listed = data["items"]
            for j, item in enumerate(listed):
                if isinstance(item, dict):
                    objects.append(RenderedObject(item, f"{where} items[{j}]"))
                else:
                    problems.append(
                        Problem(doc.file, f"{where}: items[{j}] is not an object", mark)
                    )
            continue
        objects.append(RenderedObject(data, where))
    return objects, problems


def _yaml_type(value: Any) -> str:
    return "list" if isinstance(value, list) else "plain value" if value is not None else "null"


# --- Kustomize ---------------------------------------------------------------------------------

# Keys whose entries kustomize loads as resources: files, directories (other kustomizations),
# or, when the path is not a local one, remote bases it would fetch.
_RESOURCE_KEYS = ("resources", "bases", "components")
# Keys whose entries name plugin configurations (or kustomizations of them).
_PLUGIN_KEYS = ("generators", "transformers", "validators")
# Keys that make kustomize inflate Helm charts: fetching them and running helm.
_HELM_KEYS = ("helmCharts", "helmGlobals", "helmChartInflationGenerator")
_URL = re.compile(r"^(?:[a-z][a-z0-9+.-]*://|git@|(?:github|gitlab|bitbucket)\.(?:com|org)/)", re.I)
# A plugin's apiVersion that names kustomize's own builtin transformers, which run no code.
BUILTIN_PLUGIN_API = "builtin"
_FUNCTION_ANNOTATIONS = ("config.kubernetes.io/function", "config.k8s.io/function")


@dataclass(frozen=True)
class Reference:
    """A local path a kustomization names: resolved and checked by the reader."""

    loc: Loc  # where in the kustomization
    path: str  # as written, relative to the kustomization's directory
    role: Literal["resource", "file", "plugin"]  # resources may be directories to walk into


def kustomization_references(doc: YamlDocument) -> tuple[list[Reference], list[Problem]]:
    """The local paths a kustomization names, and what it may not do whatever they hold:
    fetch a remote base, inflate a Helm chart, run an inline plugin."""
    problems: list[Problem] = []
    refs: list[Reference] = []
    data = doc.data
    if not isinstance(data, dict):
        return [], [problem_at(doc, (), "a kustomization is a mapping of fields — fix the file")]

    def problem(loc: Loc, message: str) -> None:
        problems.append(problem_at(doc, loc, message))

    for key in _HELM_KEYS:
        if key in data:
            problem(
                (key,),
                "kustomize would fetch and inflate a Helm chart — Bascule renders charts "
                "itself: make the chart the environment's `manifests:` (kind: helm)",
            )
    for loc, value in _strings(data, _RESOURCE_KEYS):
        if _URL.match(value) or "?ref=" in value:
            problem(
                loc,
                f"{value!r} is a remote base: kustomize would fetch it — vendor it into the "
                "repository and name its directory",
            )
        else:
            refs.append(Reference(loc, value, "resource"))
    for loc, value in _strings(data, _PLUGIN_KEYS):
        if "\n" in value:  # an inline configuration, checked here
            try:
                inline = parse_yaml_stream(value, doc.file)
            except ConfigError:
                problem(loc, "an inline plugin configuration that is not YAML — fix it")
                continue
            for config in inline:
                if (why := plugin_problem(config.data)) is not None:
                    problem(loc, why)
        else:
            refs.append(Reference(loc, value, "plugin"))
    for loc, value in _file_fields(data):
        if _URL.match(value):
            problem(loc, f"{value!r} is a URL: kustomize would fetch it — vendor the file")
        else:
            refs.append(Reference(loc, value, "file"))
    return refs, problems


def plugin_problem(config: Any) -> str | None:
    """Why a plugin configuration (an entry of generators/transformers/validators) would run
    code, if it would; only kustomize's builtin plugins are allowed."""
    if not isinstance(config, dict):
        return "a plugin configuration must be a mapping — fix it"
    metadata = config.get("metadata")
    annotations = metadata.get("annotations") if isinstance(metadata, dict) else None
    if isinstance(annotations, dict):
        for key in _FUNCTION_ANNOTATIONS:
            if key in annotations:
                return (
                    f"a KRM function ({key}): it runs a program or a container — Bascule "
                    "renders with plugins off: use kustomize's builtin fields instead"
                )
    api = config.get("apiVersion")
    if api != BUILTIN_PLUGIN_API:
        kind = config.get("kind", "?")
        return (
            f"plugin {kind} ({api}) is not one of kustomize's builtin plugins: it runs code — "
            "Bascule renders with plugins off: use kustomize's builtin fields instead"
        )
    return None


def outside_message(path: str, root: str) -> str:
    """What to say about a path that leads out of the app's repository."""
    return (
        f"{path!r} leads outside {root}, the app's repository: rendering reads only the "
        "app's own files — move it inside"
    )


def missing_message(path: str) -> str:
    return (
        f"{path!r} is not a file or directory here — fix the path (relative to this "
        "kustomization's directory); kustomize would try it as a remote base"
    )


def problem_at(doc: YamlDocument, loc: Loc, message: str) -> Problem:
    """A problem at ``loc`` of ``doc``: its line, and the key path as the field."""
    return Problem(doc.file, message, doc.mark_of(loc), format_path(loc))


def _strings(data: Mapping[str, Any], keys: Sequence[str]) -> Iterator[tuple[Loc, str]]:
    for key in keys:
        entries = data.get(key)
        if isinstance(entries, list):
            for i, value in enumerate(entries):
                if isinstance(value, str):
                    yield (key, i), value


def _file_fields(data: Mapping[str, Any]) -> Iterator[tuple[Loc, str]]:
    """Every file path a kustomization's other fields name."""
    for key in ("crds", "configurations"):
        yield from _strings(data, (key,))
    for key in ("patchesStrategicMerge",):
        for loc, value in _strings(data, (key,)):
            if "\n" not in value:  # else an inline patch
                yield loc, value
    for key in ("patches", "patchesJson6902", "replacements"):
        for i, entry in _entries(data, key):
            if isinstance(entry.get("path"), str):
                yield (key, i, "path"), entry["path"]
    openapi = data.get("openapi")
    if isinstance(openapi, dict) and isinstance(openapi.get("path"), str):
        yield ("openapi", "path"), openapi["path"]
    for key in ("configMapGenerator", "secretGenerator"):
        for i, entry in _entries(data, key):
            for field in ("files", "envs"):
                values = entry.get(field)
                for j, value in enumerate(values if isinstance(values, list) else []):
                    if isinstance(value, str):  # `key=path` or `path`
                        yield (key, i, field, j), value.split("=", 1)[-1]
            if isinstance(entry.get("env"), str):
                yield (key, i, "env"), entry["env"]


def _entries(data: Mapping[str, Any], key: str) -> Iterator[tuple[int, dict[str, Any]]]:
    entries = data.get(key)
    for i, entry in enumerate(entries if isinstance(entries, list) else []):
        if isinstance(entry, dict):
            yield i, entry


# --- Helm ----------------------------------------------------------------------------------


def chart_dependency_problems(chart: YamlDocument, vendored: Collection[str]) -> list[Problem]:
    """The dependencies of a chart (Chart.yaml's, or requirements.yaml's for an apiVersion v1
    chart) that are not vendored under charts/, whose entries are ``vendored``: Bascule
    neither fetches nor updates them."""
    data = chart.data if isinstance(chart.data, dict) else {}
    problems: list[Problem] = []
    for i, dep in _entries(data, "dependencies"):
        name = dep.get("name")
        if not isinstance(name, str):
            continue
        if name in vendored or any(
            n.startswith(f"{name}-") and n.endswith(".tgz") for n in vendored
        ):
            continue
        problems.append(
            problem_at(
                chart,
                ("dependencies", i, "name"),
                f"dependency {name!r} is not vendored under {CHARTS_DIR}/ — Bascule fetches "
                f"nothing: run `helm dependency build` and commit {CHARTS_DIR}/",
            )
        )
    return problems


_HELM_SOURCE = re.compile(r"^# Source: (\S.*)$")


def helm_origins(text: str, docs: Sequence[YamlDocument], chart: str) -> dict[int, str]:
    """What messages call each document of ``helm template``'s output ``text``: the template
    it came from, which helm writes in a ``# Source:`` comment before each one."""
    sources = [
        (number, m.group(1))
        for number, line in enumerate(text.splitlines(), 1)
        if (m := _HELM_SOURCE.match(line))
    ]
    origins: dict[int, str] = {}
    for i, doc in enumerate(docs):
        start = doc.mark_of(()).line
        before = [source for number, source in sources if number < start]
        origins[i] = f"helm chart {chart}: {before[-1] if before else f'document {i + 1}'}"
    return origins


def kustomize_origins(docs: Sequence[YamlDocument], directory: str) -> dict[int, str]:
    """What messages call each object of ``kubectl kustomize``'s output: its kind and name."""
    origins: dict[int, str] = {}
    for i, doc in enumerate(docs):
        data = doc.data if isinstance(doc.data, dict) else {}
        metadata = data.get("metadata")
        name = metadata.get("name") if isinstance(metadata, dict) else None
        origins[i] = f"kustomization {directory}: {data.get('kind', '?')} {name or '?'}"
    return origins
