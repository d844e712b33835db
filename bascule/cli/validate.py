"""``bascule validate [ENV...]``: every problem of the environment files and manifests, as
``file:line:col: field: problem``, before anything is deployed. Loads no Prefect."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterable
from pathlib import Path

from bascule.apps import APPS_DIR
from bascule.cli.options import add_dir_argument
from bascule.config import (
    ConfigError,
    EnvironmentConfig,
    Problem,
    describe_schema,
    environment_file,
)
from bascule.config_files import (
    display_path,
    exposed_secrets,
    load_all,
    load_apps,
    load_environment,
    load_yaml_file,
    scan_environments,
)
from bascule.manifest_sources import load_workload
from bascule.manifests import render_service
from bascule.outcome import Exit
from bascule.workload import render_color, report
from bascule.yamlsource import format_path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_dir_argument(parser)
    parser.add_argument(
        "--schema",
        action="store_true",
        help="print every configuration key with its default and meaning, and exit",
    )
    parser.add_argument(
        "environments",
        nargs="*",
        metavar="ENV",
        help="environments to check, each with every app of it (default: all, each top-level "
        "<name>.yaml of --dir)",
    )


def run(args: argparse.Namespace) -> int:
    out = sys.stdout
    if args.schema:
        out.writelines(f"{line}\n" for line in describe_schema())
        return Exit.COMPLETED
    directory: Path = args.dir
    names: list[str] = args.environments
    problems: list[Problem] = []
    configs: dict[str, EnvironmentConfig] = {}
    if names:
        paths = [environment_file(directory, name) for name in names]
        for path in paths:
            try:
                configs[path.stem] = load_environment(path)
            except ConfigError as exc:
                problems.extend(exc.problems)
    else:
        scanned, _ = scan_environments(directory)  # its problems are load_all's to report
        paths = list(scanned.values())
        try:
            configs = load_all(directory)
        except ConfigError as exc:
            problems.extend(exc.problems)
    # Every app of the environments checked: the overlays of further apps, each laid over
    # its environment's file (whose own problems are reported once, above).
    apps: dict[Path, EnvironmentConfig] = {}
    try:
        apps = load_apps(directory, [path.stem for path in paths])
    except ConfigError as exc:
        problems.extend(exc.problems)
    found, managed = _manifest_problems(
        [*((environment_file(directory, n), c) for n, c in configs.items()), *apps.items()]
    )
    problems.extend(found)
    warnings = _secret_warnings(configs, paths) + _approval_warnings(configs, paths)
    warnings += _exposed_warnings(directory, configs, apps)
    paths += [p for p in sorted(directory.glob(f"{APPS_DIR}/*/*.yaml")) if p.stem in configs]

    files = [display_path(path) for path in paths]
    files += [p.file for p in problems if p.file not in files]
    for file in dict.fromkeys(files):
        mine = [p for p in problems if p.file == file]
        if not mine:
            out.write(f"{file}: OK\n")
        out.writelines(f"{problem}\n" for problem in mine)
        out.writelines(f"{warning}\n" for warning in warnings if warning.file == file)
    out.writelines(f"{line}\n" for line in managed)
    bad = len({p.file for p in problems})
    if bad:
        out.write(f"{bad} file(s) with problems; nothing was changed\n")
        return Exit.USAGE
    return Exit.COMPLETED


def _secret_warnings(configs: dict[str, EnvironmentConfig], paths: list[Path]) -> list[Problem]:
    """Secret variables from environment variables that are not set here. Warnings, not
    errors: the deploy reads them in the flow's process (a worker, a CI job), which need not
    be this one. Prefect blocks and Kubernetes Secrets need a server or a cluster to check:
    `bascule secrets ENV` does."""
    warnings: list[Problem] = []
    for path in paths:
        cfg = configs.get(path.stem)
        if cfg is None:
            continue
        unset = [
            (name, ref)
            for name, ref in cfg.secrets.items()
            if ref.env and not ref.optional and not os.environ.get(ref.env)
        ]
        if not unset:
            continue
        doc = load_yaml_file(path)
        for name, ref in unset:
            loc = ("secrets", name, "env")
            warnings.append(
                Problem(
                    display_path(path),
                    f"warning: environment variable {ref.env} is not set here — a deploy run "
                    "from here would stop; set it where the flow runs (`bascule secrets "
                    f"{cfg.environment}` checks every source)",
                    doc.mark_of(loc),
                    format_path(loc),
                )
            )
    return warnings


def _approval_warnings(configs: dict[str, EnvironmentConfig], paths: list[Path]) -> list[Problem]:
    """An approval on a typed name where that is allowed (a protected environment without
    signers is an error): said, with the way out."""
    warnings: list[Problem] = []
    for path in paths:
        cfg = configs.get(path.stem)
        if cfg is None or cfg.protected:
            continue
        if cfg.approval.required and cfg.approval.allowed_signers is None:
            loc = ("approval",)
            warnings.append(
                Problem(
                    display_path(path),
                    f"warning: {cfg.environment}'s approvals are typed names anyone with a "
                    "Prefect credential can give — set approval.allowed_signers to a file of "
                    "approvers' SSH keys, and `protected: true` to make that a rule (README: "
                    "protected environments)",
                    load_yaml_file(path).mark_of(loc, key=True),
                    format_path(loc),
                )
            )
    return warnings


def _exposed_warnings(
    directory: Path, configs: dict[str, EnvironmentConfig], apps: dict[Path, EnvironmentConfig]
) -> list[Problem]:
    """A protected environment's secrets in Prefect Secret blocks, which any Prefect API
    credential can read: each app's, once, in the file that writes it."""
    loads: list[tuple[Path, str | None]] = [(environment_file(directory, n), None) for n in configs]
    loads += [(environment_file(directory, path.stem), cfg.app) for path, cfg in apps.items()]
    found = [warning for path, app in loads for warning in exposed_secrets(path, app)]
    return list(dict.fromkeys(found))


def _manifest_problems(
    configs: Iterable[tuple[Path, EnvironmentConfig]],
) -> tuple[list[Problem], list[str]]:
    """Load, sort and render each environment's manifests once, so an object that cannot
    work is found now and not in the middle of a deploy; and what each environment's runs
    will manage, and how (``bascule.workload.report``)."""
    problems: list[Problem] = []
    managed: list[str] = []
    for path, cfg in configs:
        try:
            workload = load_workload(cfg, display_path(path))
        except ConfigError as exc:
            problems.extend(exc.problems)
            continue
        image = cfg.image or "registry.example/app:v1"
        render_color(cfg, workload, color="blue", image=image, release_id="validate")
        render_service(cfg, workload.templates, role="active", color="blue")
        managed.append(f"{cfg.environment} ({cfg.app}) manages:")
        managed += [f"  {line}" for line in report(cfg, workload)]
    return list(dict.fromkeys(problems)), managed
