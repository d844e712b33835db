"""``bascule validate [ENV...]``: every problem of the environment files and manifests, as
``file:line:col: field: problem``, before anything is deployed. Loads no Prefect."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from pathlib import Path

from bascule.cli.options import add_dir_argument
from bascule.config import (
    ConfigError,
    EnvironmentConfig,
    Problem,
    describe_schema,
    environment_files,
    load_all,
    load_environment,
)
from bascule.manifests import load_templates, render_deployment, render_service
from bascule.outcome import Exit
from bascule.yamlsource import display_path


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
        help="environments to check (default: all; dev, staging and production must exist)",
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
        paths = [directory / f"{name}.yaml" for name in names]
        for path in paths:
            try:
                configs[path.stem] = load_environment(path)
            except ConfigError as exc:
                problems.extend(exc.problems)
    else:
        paths = list(environment_files(directory).values())
        try:
            configs = load_all(directory)
        except ConfigError as exc:
            problems.extend(exc.problems)
    problems.extend(_template_problems(configs.values()))

    files = [display_path(path) for path in paths]
    files += [p.file for p in problems if p.file not in files]
    for file in dict.fromkeys(files):
        mine = [p for p in problems if p.file == file]
        if not mine:
            out.write(f"{file}: OK\n")
        out.writelines(f"{problem}\n" for problem in mine)
    bad = len({p.file for p in problems})
    if bad:
        out.write(f"{bad} file(s) with problems; nothing was changed\n")
        return Exit.USAGE
    return Exit.COMPLETED


def _template_problems(configs: Iterable[EnvironmentConfig]) -> list[Problem]:
    """Load and render each environment's templates once, so a template that cannot work is
    found now and not in the middle of a deploy."""
    problems: list[Problem] = []
    seen: set[Path] = set()
    for cfg in configs:
        if cfg.manifests in seen:
            continue
        seen.add(cfg.manifests)
        try:
            templates = load_templates(cfg.manifests)
        except ConfigError as exc:
            problems.extend(exc.problems)
            continue
        image = cfg.image or "registry.example/app:v1"
        render_deployment(cfg, templates, color="blue", image=image, release_id="validate")
        render_service(cfg, templates, role="active", color="blue")
    return problems
