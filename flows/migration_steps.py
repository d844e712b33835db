"""The migration steps of a deploy: plan and lint right after preflight (a blocking finding
stops the run before the database or the cluster changes), expand revisions before the idle
color starts, contract revisions once the switch is verified and the old color is gone."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from bascule import bluegreen
from bascule import history as h
from bascule.errors import OperationFailed
from bascule.migrations import MigrationPlan, Phase, render_markdown, summary
from bascule.migrator import Result
from bascule.tasks import migration_phase, rollout, state
from bascule.tasks.context import Env
from bascule.tasks.migration_plan import build_plan, database_url
from bascule.tasks.run import Run
from bascule.vocabulary import Color

SKIPPED = "no migrations section: step skipped"


class MigrationsBlocked(OperationFailed):
    pass


@task(name="migration-plan", cache_policy=NO_CACHE)
def plan_migrations(env: Env, image: str, label: str) -> MigrationPlan:
    """The plan from the database's revision: read here, or by a Job for the job runner
    (the database may be reachable only from the cluster)."""
    cfg = env.cfg.migrations
    assert cfg is not None
    if cfg.runner == "job":
        current = migration_phase.current_in_job(env, image, label)
        return build_plan(cfg, start=current or "base", database="no")
    return build_plan(cfg, database="require", url=database_url(cfg))


def lint_gate(plan: MigrationPlan) -> str:
    if plan.blocking:
        raise MigrationsBlocked(
            "blocked by the migration lint, nothing changed: "
            + "; ".join(
                f"revision {f.revision}: {f.rule}: {f.statement or '(plan)'} — {f.fix}"
                for f in plan.blocking
            )
        )
    return f"{len(plan.findings)} findings, none blocking"


def plan_and_lint(run: Run, image: str) -> MigrationPlan | None:
    """The plan goes in the report (and the approval form); None without migrations."""
    if run.env.cfg.migrations is None:
        run.skip("migrations", SKIPPED)
        return None
    if run.release.kind == "rollback":  # the schema stays: never downgraded, nothing contracted
        run.skip("migrations", "a rollback runs no migrations")
        return None
    plan = run.step(
        "migration-plan", plan_migrations, run.env, image, run.release.id, summary=summary
    )
    run.sections.append(render_markdown(plan))
    run.step("migration-lint", lint_gate, plan)
    return plan


@task(name="migrate", cache_policy=NO_CACHE)
def upgrade(env: Env, image: str, target: str, label: str) -> Result:
    return migration_phase.upgrade(env, image, target, label)


def run_phase(run: Run, plan: MigrationPlan | None, phase: Phase, image: str) -> None:
    """Upgrades to the phase's target; MigrationFailed (with the failing revision,
    statement and the database's error) when it fails. Both end in the release record."""
    if plan is None:
        return
    name = f"migrate-{phase}"
    target = plan.expand_target if phase is Phase.EXPAND else plan.contract_target
    if target is None:
        run.skip(name, f"no pending {phase} revision")
        return
    runner = run.env.cfg.migrations.runner if run.env.cfg.migrations else "process"
    results: list[Result] = []

    def attempt() -> str:
        result = upgrade(run.env, image, target, run.release.id)
        results.append(result)
        if not result.ok:
            raise migration_phase.MigrationFailed(result, str(phase))
        waits = result.lock_summary()
        return f"{result.before or 'base'} → {result.after} ({runner} runner)" + (
            f"; {waits}" if waits else ""
        )

    try:
        run.step(name, attempt)
    finally:
        if results:
            r = results[0]
            record = h.Migration(
                str(phase),
                runner,
                r.target,
                r.before,
                r.after,
                r.ok,
                tuple(r.applied),
                r.failed_revision,
                r.statement,
                r.error,
                r.seconds,
            )
            run.save(migrations=(*run.release.migrations, record))


def contract(run: Run, plan: MigrationPlan, image: str, old: Color | None) -> str:
    """Runs under the deploy lock, after the old color's delayed scale-down: the contract
    revisions, only if the new color still serves this release and no pod of the old one
    is left (so the old version never sees what they drop). Returns what happened."""
    env = run.env
    grace = env.templates.deployment["spec"]["template"]["spec"].get(
        "terminationGracePeriodSeconds", 30
    )
    left = rollout.pods_left(env, old, grace + 30) if old else 0
    why_not = bluegreen.contract_blocker(state.observe(env), run.release, old, left)
    if why_not:
        run.skip(f"migrate-{Phase.CONTRACT}", f"not run: {why_not}; the next deploy plans it")
        run.save()
        return f"contract migrations not run: {why_not}"
    run_phase(run, plan, Phase.CONTRACT, image)
    return f"contract migrations done: {summary(plan)}"
