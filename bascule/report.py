"""The run's report as Markdown: plan, every step with result and duration, check
results, and why it ended as it did. Pure: rendered from plain records."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from bascule.analysis import Evaluation
from bascule.checks import CheckResult
from bascule.history import Release
from bascule.markdown import cell, code

DETAIL_LIMIT = 300  # a cell's share of a report; the full text is in the run's logs


def render(
    app: str,
    environment: str,
    release: Release,
    checks: Sequence[CheckResult],
    details: Sequence[str] = (),
    api_requests: int | None = None,
    evaluations: Sequence[Evaluation] = (),
    analysis_skipped: str = "",
    sections: Sequence[str] = (),
    preview: str | None = None,
) -> str:
    """``sections``: Markdown of its own (e.g. the migration plan), appended as it is;
    ``preview``: the configured preview link of the new color."""
    outcome = {
        "succeeded": "✅ succeeded",
        "failed": "❌ failed",
        "rolled-back": "↩️ rolled back",
        "rejected": "⛔ rejected",
        "interrupted": "⚠️ interrupted",
        "aborted": "🛑 aborted",
        "in-progress": "… in progress",
    }[release.result]
    lines = [
        f"# {app} → {environment}: {outcome}",
        "",
        f"- **Release**: {code(release.id)} ({release.kind})",
        f"- **Image**: {code(release.previous_image or '(none)')} → {code(release.image)}"
        + (f" (commit {code(release.commit)})" if release.commit else ""),
        f"- **Color**: {release.previous_color or '(none)'} → {release.color}"
        + (f" (preview: {preview})" if preview else ""),
        f"- **Digest** (what its pods ran): {code(release.digest) if release.digest else '-'}",
        f"- **Started**: {release.started}; **finished**: {release.finished or '-'}",
    ]
    if release.reason:
        lines.append(f"- **Reason**: {cell(release.reason)}")
    if release.approver:
        label = "Rejected by" if release.result == "rejected" else "Approved by"
        proof = (
            f"verified: SSH key {code(release.approver_key)}"
            if release.approver_key
            else "typed name, not verified"
        )
        lines.append(
            f"- **{label}**: {cell(release.approver)} ({proof}) — {cell(release.comment or '')}"
        )
    if len(release.signers) > 1 or (release.signers and release.result == "rejected"):
        lines.append(
            "- **Signed by**: "
            + "; ".join(
                f"{cell(a.principal)} (SSH key {code(a.fingerprint)}, {a.at})"
                for a in release.signers
            )
        )
    if api_requests is not None:
        lines.append(f"- **Kubernetes API requests**: {api_requests}")
    lines += ["", "## Steps", "", "| step | result | seconds | detail |", "|---|---|---:|---|"]
    for s in release.steps:
        detail = cell(s.detail, DETAIL_LIMIT)
        lines.append(f"| {s.name} | {s.result} | {s.seconds:.2f} | {detail} |")
    if checks:
        lines += [
            "",
            "## Checks",
            "",
            "| target | check | result | attempts | detail |",
            "|---|---|---|---:|---|",
        ]
        for c in checks:
            mark = "pass" if c.passed else "**FAIL**"
            detail = cell(c.detail, DETAIL_LIMIT)
            lines.append(
                f"| {cell(c.target)} | {cell(c.name)} | {mark} | {c.attempts} | {detail} |"
            )
    if analysis_skipped:
        lines += ["", f"## Analysis: {analysis_skipped}"]
    elif evaluations:
        lines += [
            "",
            "## Analysis",
            "",
            "| time | phase | query | value | verdict | detail |",
            "|---|---|---|---:|---|---|",
        ]
        for e in evaluations:
            row = evaluation_row(e)
            mark = row["verdict"] if e.verdict == "successful" else f"**{row['verdict']}**"
            lines.append(
                f"| {row['time']} | {e.phase} | {cell(e.name)}: {code(e.query)} | "
                f"{row['value']} | {mark} | {cell(e.detail, DETAIL_LIMIT)} |"
            )
    if release.migrations:
        lines += [
            "",
            "## Migrations",
            "",
            "| phase | runner | revision before | after | result | detail |",
            "|---|---|---|---|---|---|",
        ]
        for m in release.migrations:
            detail = (
                f"applied {', '.join(m.applied) or 'nothing'} in {m.seconds:.2f} s"
                if m.ok
                else f"revision {m.failed_revision or '?'} failed: {m.error}"
                + (f" — statement: {m.statement}" if m.statement else "")
            )
            lines.append(
                f"| {m.phase} | {m.runner} | {code(m.before or 'base')} | "
                f"{code(m.after or 'base')} | {'ok' if m.ok else '**FAILED**'} | "
                f"{cell(detail, DETAIL_LIMIT * 2)} |"
            )
    lines += [s for section in sections for s in ("", section.strip())]
    for block in details:
        lines += ["", "```", block.strip(), "```"]
    return "\n".join(lines) + "\n"


def evaluation_row(e: Evaluation) -> dict[str, str]:
    """One evaluation as a row of the report's and the artifact's table."""
    return {
        "time": datetime.fromtimestamp(e.at, UTC).isoformat(timespec="milliseconds"),
        "phase": e.phase,
        "name": e.name,
        "query": e.query,
        "value": e.value,
        "verdict": str(e.verdict),
        "detail": e.detail,
    }
