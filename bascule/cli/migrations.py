"""``bascule migrations plan | lint ENV``: what a deploy of ENV would migrate, and whether it is
safe for blue-green, without deploying (so CI can lint a pull request).

The current revision comes from the database when it answers; without one (CI has none) it is
unknown and every revision is shown as pending, unless ``--from REV`` says where to start.
"""

from __future__ import annotations

import argparse
import sys

from bascule.cli.options import (
    add_app_argument,
    add_dir_argument,
    add_json_argument,
    print_json,
    resolve_app,
)
from bascule.config import environment_file
from bascule.config_files import load_environment
from bascule.errors import UsageError
from bascule.migrations import MigrationPlan, plan_json, render_markdown, summary
from bascule.outcome import Exit


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    for name, about in (
        ("plan", "the pending revisions per phase (expand, contract), their SQL and findings"),
        ("lint", "the findings only; exit 1 if one blocks the deploy"),
    ):
        sub = actions.add_parser(name, help=about, description=about)
        add_dir_argument(sub)
        sub.add_argument("environment", metavar="ENV", help="environment whose database to plan")
        add_app_argument(sub)
        sub.add_argument(
            "--from",
            dest="start",
            metavar="REV",
            help="plan from this revision (`base`: an empty database) instead of asking the "
            "database for its current one",
        )
        add_json_argument(sub, "the plan")


def _plan(args: argparse.Namespace) -> MigrationPlan:
    from bascule.tasks.migration_plan import (
        build_plan,  # loads Alembic and SQLAlchemy: only when used
    )

    name = args.environment
    cfg = load_environment(environment_file(args.dir, name), resolve_app(args))
    if cfg.migrations is None:
        raise UsageError(
            f"{name} has no migrations section — add one (see `bascule validate --schema`, "
            "migrations.*)"
        )
    return build_plan(cfg.migrations, start=args.start, database="try")


def run(args: argparse.Namespace) -> int:
    plan = _plan(args)
    blocked = bool(plan.blocking)
    if args.json:
        print_json(plan_json(plan))
    elif args.action == "plan":
        sys.stdout.write(render_markdown(plan, heading="#"))
    else:
        for finding in plan.findings:
            kind = "BLOCKS" if finding.blocking else "note"
            print(f"{kind}: {finding.revision}: {finding.rule}: {finding.message}")
            if finding.statement:
                print(f"    statement: {' '.join(finding.statement.split())}")
            print(f"    fix: {finding.fix}")
        print(summary(plan))
    if args.action == "lint" and blocked:
        return Exit.FAILED
    return Exit.COMPLETED
