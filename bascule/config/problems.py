"""Problems as people read them: a pydantic error mapped back to the file, line and field that
caused it (an overlay's or its environment file's), with what to do; and the checks that only
the loaded models can answer (across files, signers files with no key, exposed secrets)."""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from bascule.apps import APPS_DIR
from bascule.config.base import FieldProblem, Surroundings
from bascule.config.environment import EnvironmentConfig
from bascule.config.schema import model_at
from bascule.config.secrets import AppSecret, SecretRef
from bascule.signoff import signers_count
from bascule.yamlsource import ConfigError, Loc, Mark, Problem, YamlDocument, format_path


def cross_file_problems(
    loaded: Mapping[str, tuple[EnvironmentConfig, YamlDocument]],
) -> list[Problem]:
    problems: list[Problem] = []
    first: tuple[str, EnvironmentConfig] | None = None
    targets: dict[tuple[Path | None, str | None, str], str] = {}
    for name, (cfg, doc) in loaded.items():
        if first is None:
            first = (name, cfg)
        elif cfg.app != first[1].app:
            problems.append(
                Problem(
                    doc.file,
                    f"{cfg.app!r} differs from {first[1].app!r} in {first[0]} — the environment "
                    "files share their own app; give another app its own "
                    f"{APPS_DIR}/{cfg.app}/{name}.yaml",
                    doc.mark_of(("app",)),
                    "app",
                )
            )
        target = (cfg.kube.kubeconfig, cfg.kube.context, cfg.namespace)
        if target in targets:
            problems.append(
                Problem(
                    doc.file,
                    f"{cfg.namespace!r} is also {targets[target]}'s namespace in the same cluster: "
                    "the environments would overwrite each other — give each its own namespace",
                    doc.mark_of(("namespace",)),
                    "namespace",
                )
            )
        else:
            targets[target] = name
    return problems


@dataclass(frozen=True)
class Layers:
    """An environment file and, for a further app, its overlay: which of them wrote a value."""

    base: YamlDocument
    over: YamlDocument | None = None

    def locate(self, loc: Sequence[str | int], *, key: bool = False) -> tuple[str, Mark]:
        """The file and position of the value at ``loc``: the overlay's where it wrote that
        value or the nearest ancestor of it that the environment file also has."""
        if self.over is not None:
            depth = {
                doc.file: max((n for n in range(1, len(loc) + 1) if doc.has(loc[:n])), default=0)
                for doc in (self.base, self.over)
            }
            if depth[self.over.file] and depth[self.over.file] >= depth[self.base.file]:
                return self.over.file, self.over.mark_of(loc, key=key)
        return self.base.file, self.base.mark_of(loc, key=key)


def mapping_of(doc: YamlDocument, *, empty_ok: bool = False) -> dict[str, Any]:
    if doc.data is None and empty_ok:
        return {}
    if isinstance(doc.data, dict):
        return doc.data
    found = "an empty file" if doc.data is None else f"a {type(doc.data).__name__}"
    raise ConfigError(
        [
            Problem(
                doc.file,
                f"expected a mapping of settings (app, environment, namespace, …), found "
                f"{found} — see deployments/dev.yaml for an example",
                doc.mark_of(()),
            )
        ]
    )


def overlay_problem(
    doc: YamlDocument, over: Mapping[str, Any], app: str, environment_file: str
) -> Problem | None:
    """What an app's overlay may not say: the environment's protection, or another app."""
    if "protected" in over:
        return Problem(
            doc.file,
            f"protection is the environment's, not an app's — remove it here and "
            f"set it in {environment_file}",
            doc.mark_of(("protected",), key=True),
            "protected",
        )
    if over.get("app", app) != app:
        return Problem(
            doc.file,
            f"{over['app']!r} is not the app this file is for — write `app: {app}` "
            f"or leave it out ({APPS_DIR}/<app>/ names the app)",
            doc.mark_of(("app",)),
            "app",
        )
    return None


def secret_warnings(cfg: EnvironmentConfig, layers: Layers) -> list[Problem]:
    """Warnings for a protected environment's secrets read from Prefect Secret blocks, each
    naming the file, line and field, with what to use instead. Any credential of the Prefect
    API can read a block's value: the API key of any environment's workflow, and a
    self-hosted server's one login."""
    if not cfg.protected:
        return []
    warnings: list[Problem] = []
    for loc, ref in _secret_refs(cfg):
        if ref.prefect_secret is None:
            continue
        instead = (
            f"`{{env: VARIABLE}}` set in the environment of `bascule worker {cfg.environment}`"
        )
        if isinstance(ref, AppSecret):
            instead += f", or `kubernetes_secret: {{name, key}}` in namespace {cfg.namespace}"
        field = (*loc, "prefect_secret")
        file, mark = layers.locate(field)
        warnings.append(
            Problem(
                file,
                f"warning: {cfg.environment} is protected, but Prefect Secret block "
                f"{ref.prefect_secret!r} can be read by any credential of the Prefect API "
                "(any workflow's API key; a self-hosted server has one login for everything) "
                f"— give the value to {cfg.environment}'s own worker instead: {instead} "
                "(README: Secrets)",
                mark,
                format_path(field),
            )
        )
    return warnings


def _secret_refs(data: Any, loc: Loc = ()) -> list[tuple[Loc, SecretRef]]:
    """Every secret source in ``data`` (a config, or any part of it), with where it is."""
    if isinstance(data, SecretRef):
        return [(loc, data)]
    if isinstance(data, BaseModel):
        items: Any = ((name, getattr(data, name)) for name in type(data).model_fields)
    elif isinstance(data, dict):
        items = data.items()
    elif isinstance(data, list | tuple):
        items = enumerate(data)
    else:
        return []
    return [found for key, value in items for found in _secret_refs(value, (*loc, key))]


def signers_problem(
    cfg: EnvironmentConfig, layers: Layers, surroundings: Surroundings
) -> Problem | None:
    """A protected environment whose allowed_signers or evidence_signers file (as the loader
    read it) lists no key:
    nobody could approve, or nothing be promoted, and a file emptied by mistake must not
    read as "signatures are checked"."""
    files = {  # the file, what follows, whose keys it lists, the README's section
        ("approval", "allowed_signers"): (
            cfg.approval.allowed_signers,
            "nobody could approve",
            "approver",
            "signed approvals",
        ),
        ("promotion", "evidence_signers"): (
            cfg.promotion.evidence_signers,
            f"no digest {cfg.promote_from} verified could be promoted",
            f"worker of {cfg.promote_from}",
            "promotion",
        ),
    }
    for loc, (signers, consequence, whose, section) in files.items():
        if not cfg.protected or signers is None:
            continue
        seen = surroundings.paths[signers]
        if signers_count(seen.text or "") > 0:
            continue
        file, mark = layers.locate(loc)
        return Problem(
            file,
            f"{seen.shown} lists no key, and {cfg.environment} is protected: "
            f"{consequence} — add one `principal ssh-ed25519 AAAA…` line per {whose} (README: "
            f"{section})",
            mark,
            format_path(loc),
        )
    return None


def validation_problems(layers: Layers, exc: ValidationError) -> list[Problem]:
    problems: list[Problem] = []
    for err in exc.errors(include_url=False):
        loc: list[str | int] = list(err["loc"])
        key = False
        if loc and loc[-1] == "[key]":
            loc.pop()
            key = True
        message: str = err["msg"]
        error = (err.get("ctx") or {}).get("error")
        if isinstance(error, FieldProblem):
            loc.extend(error.loc)
            key = key or error.key
            message = str(error)
        elif err["type"] in ("value_error", "assertion_error"):
            message = message.split(", ", 1)[1] if ", " in message else message
        elif err["type"] == "extra_forbidden":
            key = True
            message = _unknown_key_message(loc)
        elif err["type"] == "missing":
            message = _missing_message(loc)
        elif err["type"] == "model_type":
            model = model_at(loc)
            keys = ", ".join(model.model_fields) if model is not None else "…"
            message = f"expected a mapping with keys from: {keys} — fix the value"
        else:
            message += " — fix the value"
        file, mark = layers.locate(loc, key=key)
        problems.append(Problem(file, message, mark, format_path(loc) or "(file)"))
    return sorted(
        problems, key=lambda p: (p.file, p.mark.line, p.mark.column) if p.mark else (p.file, 0, 0)
    )


def _unknown_key_message(loc: Sequence[str | int]) -> str:
    name = str(loc[-1]) if loc else ""
    model = model_at(loc[:-1])
    if model is None:
        return f"unknown key {name!r} — remove it"
    allowed = list(model.model_fields)
    close = difflib.get_close_matches(name, allowed, n=1)
    maybe = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown key {name!r}{maybe} — allowed keys: {', '.join(allowed)}"


def _missing_message(loc: Sequence[str | int]) -> str:
    name = str(loc[-1]) if loc else ""
    model = model_at(loc[:-1])
    field = model.model_fields.get(name) if model is not None else None
    about = f" ({field.description})" if field is not None and field.description else ""
    return f"required key {name!r} is missing — add it{about}"
