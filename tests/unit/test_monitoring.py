"""What a run tells monitoring: the Pushgateway's series, the alerts, the DORA figures (pure,
from made-up histories), the monitoring section of the configuration, and the alerting rules
(checked and unit-tested by the real promtool)."""

from __future__ import annotations

import subprocess
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from bascule.config import ConfigError
from bascule.config_files import load_environment
from bascule.errors import UsageError
from bascule.history import Release, Result, Step
from bascule.monitoring import Series, alerts, dora, epoch, failures, normal_time, series
from bascule.prefect_client import ApiSettings
from bascule.trigger.options import Options, check

RULES = Path(__file__).resolve().parents[2] / "deployments" / "monitoring"
T0 = epoch("2026-11-01T00:00:00Z")


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def run(
    rid: str,
    start: float,
    result: Result = "succeeded",
    kind: str = "deploy",
    switched: bool = True,
    commit_time: str | None = None,
    rollback_after: float | None = None,
) -> Release:
    """A finished run that started at T0 + ``start`` s: its wait-ready took 20 s and its switch
    landed 30 s in; an automatic rollback switched back ``rollback_after`` s later."""
    steps = [Step("wait-ready", "ok", 20.0, "", T0 + start + 20)]
    if switched:
        steps.append(Step("switch", "ok", 0.2, "", T0 + start + 30))
    if rollback_after is not None:
        steps.append(Step("rollback-switch", "ok", 0.3, "", T0 + start + 30 + rollback_after))
    return Release(
        id=rid,
        image=f"shop:{rid}",
        color="green",
        previous_image="shop:old",
        previous_color="blue",
        started=_iso(T0 + start),
        finished=_iso(T0 + start + 60),
        kind=kind,
        phase="done",
        result=result,
        steps=tuple(steps),
        commit_time=commit_time,
    )


# v1 ok; v2 rolled back automatically 12 s after its switch; v3 rejected before the switch;
# v4 ok, then taken back by hand (the rollback's switch lands 1000 s after v4's); v5 ok.
HISTORY = [
    run("v1", 0, commit_time=_iso(T0 - 600)),
    run("v2", 3600, "rolled-back", rollback_after=12),
    run("v3", 7200, "rejected", switched=False),
    run("v4", 10800, commit_time=_iso(T0 + 10800 - 1200)),
    run("back", 11800, kind="rollback"),
    run("v5", 86400, commit_time=_iso(T0 + 86400 - 300)),
]


def named(samples: list[Series], name: str) -> list[Series]:
    return [s for s in samples if s.name == name]


# --- DORA -------------------------------------------------------------------------------------


def test_failures_are_automatic_and_manual_rollbacks_of_live_deployments() -> None:
    found = failures(HISTORY)
    assert [(f.release.id, f.manual, f.restore_seconds) for f in found] == [
        ("v2", False, 12.0),
        ("v4", True, 1000.0),
    ]


def test_a_deployment_aborted_after_its_switch_was_taken_back_by_hand() -> None:
    aborted = run("v6", 90000, "aborted", rollback_after=5)
    before_switch = run("v7", 93600, "aborted", switched=False)
    found = failures([*HISTORY, aborted, before_switch])
    assert [(f.release.id, f.manual, f.restore_seconds) for f in found][2:] == [("v6", True, 5.0)]


def test_dora_figures() -> None:
    figures = dora("shop", "staging", HISTORY, now=T0 + 2 * 86400, days=30)
    # The whole history lies in the period: it starts at the oldest record, two days ago.
    assert figures.since == "2026-11-01T00:00:00Z" and figures.days == pytest.approx(2)
    assert figures.records == 6
    assert figures.deployments == 4  # v1, v2, v4, v5: the rejected v3 and the rollback are not
    assert figures.per_day == pytest.approx(2)
    assert figures.change_failures == 2 and figures.change_failure_rate == pytest.approx(0.5)
    assert figures.restores == 2 and figures.mean_time_to_restore_seconds == pytest.approx(506)
    # commit → switch: v1 630 s, v4 1230 s, v5 330 s
    assert figures.lead_times == 3 and figures.median_lead_time_seconds == pytest.approx(630)
    assert "change failure rate:    50% (2 of 4)" in figures.lines()
    assert "mean time to restore:   8.4 min (2 restores)" in figures.lines()


def test_dora_period_leaves_older_records_out() -> None:
    figures = dora("shop", "staging", HISTORY, now=T0 + 86400 + 3600, days=0.5)
    assert figures.records == 1 and figures.deployments == 1
    assert figures.change_failure_rate == 0.0 and figures.mean_time_to_restore_seconds is None
    assert figures.per_day == pytest.approx(1)  # a period under a day counts as one


def test_dora_of_an_empty_history() -> None:
    figures = dora("shop", "staging", [], now=T0, days=7)
    assert figures.deployments == 0 and figures.change_failure_rate is None
    assert figures.to_json()["median_lead_time_seconds"] is None


# --- the Pushgateway's series -----------------------------------------------------------------


def test_series_of_a_manual_rollback_keep_the_older_automatic_one() -> None:
    history = HISTORY[:5]
    samples = series(history, history[-1])
    last = {
        (s.labels["kind"], s.labels["result"]): s.value
        for s in named(samples, "bascule_deployment_last_timestamp_seconds")
    }
    assert last[("deploy", "succeeded")] == epoch(HISTORY[3].finished or "")
    assert last[("deploy", "rolled-back")] == epoch(HISTORY[1].finished or "")
    assert last[("rollback", "succeeded")] == epoch(HISTORY[4].finished or "")
    counts = {
        (s.labels["kind"], s.labels["result"]): s.value
        for s in named(samples, "bascule_history_releases")
    }
    assert counts == {
        ("deploy", "succeeded"): 2,
        ("deploy", "rolled-back"): 1,
        ("deploy", "rejected"): 1,
        ("rollback", "succeeded"): 1,
    }
    [info] = named(samples, "bascule_deployment_info")
    assert info.labels["release"] == "back" and info.labels["kind"] == "rollback"
    stages = {
        s.labels["stage"]: s.value
        for s in named(samples, "bascule_deployment_stage_duration_seconds")
    }
    assert stages == {"wait-ready": 20.0, "switch": 0.2}
    rollbacks = {
        (s.name, s.labels["trigger"], s.labels["release"]): s.value
        for s in samples
        if s.name.startswith("bascule_rollback_")
    }
    assert rollbacks == {
        ("bascule_rollback_last_timestamp_seconds", "automatic", "v2"): T0 + 3600 + 42,
        ("bascule_rollback_switch_seconds", "automatic", "v2"): 0.3,
        ("bascule_rollback_restore_seconds", "automatic", "v2"): 12.0,
        ("bascule_rollback_last_timestamp_seconds", "manual", "v4"): T0 + 11800 + 30,
        ("bascule_rollback_switch_seconds", "manual", "v4"): 0.2,
        ("bascule_rollback_restore_seconds", "manual", "v4"): 1000.0,
    }
    [lead] = named(samples, "bascule_lead_time_seconds")
    assert lead.labels == {"release": "v4"} and lead.value == 1230.0


def test_every_family_has_one_label_set() -> None:
    # prometheus_client refuses a family whose samples differ in label names.
    families: dict[str, set[tuple[str, ...]]] = {}
    for s in series(HISTORY, HISTORY[-1]):
        families.setdefault(s.name, set()).add(tuple(s.labels))
    assert all(len(keys) == 1 for keys in families.values()), families


# --- alerts -----------------------------------------------------------------------------------


def alert_names(release: Release, environment: str = "staging", timed_out: bool = False) -> Any:
    """``environment``'s alerts: production's and qa's protected (as their files say)."""
    protected = environment in ("production", "qa")
    url = "http://ui/runs/flow-run/1"
    raised = alerts("shop", environment, release, timed_out, url, T0, protected=protected)
    return [(a["labels"]["alertname"], a["labels"]["severity"]) for a in raised]


def test_which_runs_raise_which_alerts() -> None:
    assert alert_names(HISTORY[0]) == []
    assert alert_names(HISTORY[1]) == [("BasculeRollback", "warning")]
    assert alert_names(HISTORY[1], "production") == [("BasculeRollback", "critical")]
    assert alert_names(HISTORY[4]) == [("BasculeRollback", "warning")]
    failed = replace(HISTORY[0], result="failed")
    assert alert_names(failed) == []
    assert alert_names(failed, "production") == [("BasculeDeployFailed", "critical")]
    # Any protected environment, whatever its name.
    assert alert_names(failed, "qa") == [("BasculeDeployFailed", "critical")]
    assert alert_names(HISTORY[1], "qa") == [("BasculeRollback", "critical")]
    rejected = replace(HISTORY[2], reason="no decision within 60 s")
    assert alert_names(rejected, "production") == []
    assert alert_names(rejected, "production", timed_out=True) == [
        ("BasculeApprovalTimedOut", "warning")
    ]


def test_an_alert_names_app_environment_release_and_links_the_run() -> None:
    [alert] = alerts("shop", "staging", HISTORY[1], False, "http://ui/runs/flow-run/1", T0)
    assert alert["labels"] == {
        "alertname": "BasculeRollback",
        "app": "shop",
        "environment": "staging",
        "release": "v2",
        "severity": "warning",
    }
    assert alert["annotations"]["run_url"] == alert["generatorURL"] == "http://ui/runs/flow-run/1"
    assert epoch(alert["endsAt"]) - epoch(alert["startsAt"]) == 3600


def test_commit_time_is_normalised_to_utc() -> None:
    assert normal_time("2026-11-28T06:30:00+01:00") == "2026-11-28T05:30:00Z"
    with pytest.raises(ValueError, match="not an ISO-8601 time"):
        normal_time("yesterday")


# --- configuration --------------------------------------------------------------------------


MINIMAL = "app: shop\nenvironment: staging\nnamespace: shop-staging\n"


def test_monitoring_endpoints_are_optional(tmp_path: Path) -> None:
    (tmp_path / "staging.yaml").write_text(MINIMAL)
    cfg = load_environment(tmp_path / "staging.yaml").monitoring
    assert cfg.pushgateway is None and cfg.alertmanager is None
    (tmp_path / "staging.yaml").write_text(
        MINIMAL + "monitoring:\n  pushgateway: http://pg:9091/\n  alertmanager: https://am\n"
    )
    cfg = load_environment(tmp_path / "staging.yaml").monitoring
    assert (cfg.pushgateway, cfg.alertmanager) == ("http://pg:9091", "https://am")


@pytest.mark.parametrize(
    ("value", "message"),
    [("pg:9091", "not an http(s) URL"), ("http://u:secret@pg:9091", "credentials in the URL")],
)
def test_bad_monitoring_url_names_file_line_and_field(
    tmp_path: Path, value: str, message: str
) -> None:
    path = tmp_path / "staging.yaml"
    path.write_text(MINIMAL + f"monitoring:\n  pushgateway: {value}\n")
    with pytest.raises(ConfigError) as info:
        load_environment(path)
    [problem] = info.value.problems
    assert str(problem).startswith(f"{path}:5:16: monitoring.pushgateway: "), str(problem)
    assert message in str(problem) and "secret" not in str(problem)


# --- alerting rules ---------------------------------------------------------------------------


def test_rules_pass_promtool_check_and_their_unit_test() -> None:
    for args in (("check", "rules", "rules.yaml"), ("test", "rules", "rules.test.yaml")):
        res = subprocess.run(
            ["promtool", *args], cwd=RULES, capture_output=True, text=True, timeout=60
        )
        assert res.returncode == 0, res.stdout + res.stderr
        assert "SUCCESS" in res.stdout


def test_trigger_passes_a_valid_commit_time_to_the_flow() -> None:
    base = Options("staging", "shop:v1", ApiSettings("http://prefect/api"), commit="abc1234")
    assert "commit_time" not in base.parameters
    timed = replace(base, commit_time="2026-11-28T05:30:00Z")
    check(timed)
    assert timed.parameters["commit_time"] == "2026-11-28T05:30:00Z"
    with pytest.raises(UsageError, match="--commit-time: 'soon' is not an ISO-8601 time"):
        check(replace(base, commit_time="soon"))
