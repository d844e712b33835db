"""The production approval gate through the Prefect UI, in a real browser (Playwright driving
Debian's chromium), on the real cluster and Prefect server: a person opens the paused run,
reads what is being approved, fills the form and submits; only an approval moves traffic, and
where approvals are signed only one with a signature made by the command the form shows."""

from __future__ import annotations

import contextlib
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from playwright.sync_api import Locator, Page, expect

from bascule.signoff import DEFAULT_KEY, NAMESPACE
from tests.integration.test_approval import (  # noqa: F401  (v1_in_production: a fixture)
    V1,
    V2,
    start_v2,
    v1_in_production,
)
from tests.support import deploys, signers
from tests.support.browser import browser_page  # noqa: F401  (a fixture)
from tests.support.cluster import Cluster
from tests.support.migrations import URL_VARIABLE, legacy_chain, section, upgrade_directly
from tests.support.postgres import database

pytestmark = [pytest.mark.cluster, pytest.mark.prefect, pytest.mark.browser]


@pytest.fixture
def v2_paused(
    cluster: Cluster,
    prefect_server: str,
    namespace: str,
    tmp_path: Path,
    v1_in_production: str,  # noqa: F811
    approver_key: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """A deploy of v2 to production, paused at the approval gate: its process and run id.
    v2 comes with migrations: the expand revision 0002 runs before its color starts, the
    contract revision 0003 (its SQL in the form) after the switch. Only approvals signed by
    ``approver_key`` (ann@example.com in its allowed_signers) count.

    A run that a failed test leaves paused is rejected through the CLI, so that it releases
    its locks (the Prefect concurrency limit is per app and environment, shared by every
    namespace of the session) instead of holding them until their lease runs out."""
    with database(cluster) as db:
        ini = legacy_chain(tmp_path)
        upgrade_directly(db, ini, "0001a")
        monkeypatch.setenv(URL_VARIABLE, db.url())
        env_file = Path(v1_in_production) / "production.yaml"
        data = yaml.safe_load(env_file.read_text())
        signers.allowed_signers(
            env_file.parent / "allowed_signers", {"ann@example.com": approver_key}
        )
        approval = {**data["approval"], "allowed_signers": "allowed_signers"}
        signed = {**data, "approval": approval, "migrations": section(ini, URL_VARIABLE)}
        env_file.write_text(yaml.safe_dump(signed))
        proc = start_v2(prefect_server, v1_in_production, tmp_path / "v2.log")
        run_id = None
        try:
            run_id = deploys.paused_run(prefect_server, cluster, namespace, V2)
            yield proc, run_id
        finally:
            if proc.poll() is None and run_id is not None:
                deploys.run(prefect_server, "reject", run_id, "--as", "test-cleanup", timeout=60)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=60)
            if proc.poll() is None:
                deploys.kill(proc)


@pytest.fixture
def approver_key(tmp_path: Path) -> Path:
    return signers.keypair(tmp_path / "keys", "ann")


def open_approval_form(page: Page, api_url: str, run_id: str, shot: Path) -> Locator:
    """Opens the run's page in the UI and its resume form; checks that the form shows what is
    being approved, saves a screenshot and returns the dialog."""
    ui = api_url.removesuffix("/api")
    page.goto(f"{ui}/runs/flow-run/{run_id}")
    expect(page.get_by_text("Paused", exact=True).first).to_be_visible()
    page.get_by_role("button", name="Resume").click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_contain_text("Approve sample-app in production?")
    expect(dialog).to_contain_text(re.compile(rf"{re.escape(V1)}\s*→\s*{re.escape(V2)}"))
    expect(dialog).to_contain_text(re.compile(r"Traffic: (blue → green|green → blue)"))
    expect(dialog).to_contain_text("Preview:")
    expect(dialog.get_by_role("table").first).to_contain_text("pass")  # the pre-switch checks
    # The migrations: the expand revision already applied, the contract one's SQL to come.
    expect(dialog).to_contain_text(re.compile(r"Migrations \(expand.*0001a\s*→\s*0002"))
    expect(dialog).to_contain_text("ALTER TABLE items DROP COLUMN legacy")
    page.screenshot(path=str(shot))
    return dialog


def field(dialog: Locator, label: str) -> Locator:
    """One property of the generated form, by its label (the UI titles the field name and
    adds "(Optional)" to the fields with a default). The labels' ``for`` do not point at the
    inputs, so get_by_label cannot be used."""
    label_text = dialog.page.get_by_text(label, exact=True)  # `has` is relative to each match
    return dialog.locator(".p-label").filter(has=label_text)


def fill_and_submit(
    page: Page,
    dialog: Locator,
    run_id: str,
    shot: Path,
    *,
    approve: bool,
    approver: str,
    comment: str,
    signature: str = "",
) -> None:
    switch = field(dialog, "Approve (Optional)").get_by_role("switch")
    expect(switch).to_have_attribute("aria-checked", "false")  # fail safe: unticked by default
    if approve:
        switch.click()
        expect(switch).to_have_attribute("aria-checked", "true")
    field(dialog, "Approver").get_by_role("textbox").fill(approver)
    field(dialog, "Comment (Optional)").get_by_role("textbox").fill(comment)
    # A one-line input: the browser drops the signature's line breaks, the flow puts them back.
    field(dialog, "Signature (Optional)").get_by_role("textbox").fill(signature)
    page.screenshot(path=str(shot))
    resume_url = f"/flow_runs/{run_id}/resume"
    posts: list[str] = []
    page.on("request", lambda r: posts.append(r.url) if r.url.endswith(resume_url) else None)
    with page.expect_response(
        lambda r: r.url.endswith(resume_url) and r.request.method == "POST"
    ) as resumed:
        dialog.get_by_role("button", name="Submit").click()
    # The resume endpoint answers 201 even when it refuses: its status tells.
    assert resumed.value.json()["status"] == "ACCEPT", resumed.value.text()
    expect(page.get_by_text("Flow run resumed").first).to_be_visible()  # a toast (shown twice)
    expect(dialog).to_be_hidden()
    assert len(posts) == 1, posts  # one submission, one resume


def signed_by_the_shown_command(dialog: Locator, key: Path) -> str:
    """Runs the signing command the form shows, as the approver would, with their key."""
    command = dialog.locator("code").filter(has_text="ssh-keygen -Y sign").first.inner_text()
    assert command.endswith(f"-f {DEFAULT_KEY} -n {NAMESPACE}"), command
    shown = command.replace(DEFAULT_KEY, str(key))
    done = subprocess.run(["sh", "-c", shown], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_approve_in_the_ui_switches_and_records_the_signer(
    cluster: Cluster,
    namespace: str,
    prefect_server: str,
    tmp_path: Path,
    v2_paused: tuple[subprocess.Popen[bytes], str],
    approver_key: Path,
    browser_page: Page,  # noqa: F811
) -> None:
    proc, run_id = v2_paused
    before = deploys.active_color(cluster, namespace)
    dialog = open_approval_form(browser_page, prefect_server, run_id, tmp_path / "form.png")
    expect(dialog).to_contain_text("Sign to approve")
    # Approved without a signature: refused, the run pauses again and nothing moves.
    fill_and_submit(
        browser_page,
        dialog,
        run_id,
        tmp_path / "unsigned.png",
        approve=True,
        approver="Alice UI",
        comment="no signature",
    )
    deploys.paused_again(prefect_server, run_id, 1)
    assert deploys.active_color(cluster, namespace) == before
    dialog = open_approval_form(browser_page, prefect_server, run_id, tmp_path / "again.png")
    expect(dialog).to_contain_text(
        "approval refused (typed name: Alice UI): no signature: this environment takes only "
        "signed approvals"
    )
    fill_and_submit(
        browser_page,
        dialog,
        run_id,
        tmp_path / "filled.png",
        approve=True,
        approver="Alice UI",
        comment="LGTM in the UI",
        signature=signed_by_the_shown_command(dialog, approver_key),
    )
    assert proc.wait(timeout=180) == 0, (tmp_path / "v2.log").read_text()[-2000:]
    after = deploys.active_color(cluster, namespace)
    assert after is not None and after != before
    last = deploys.history(cluster, namespace)[-1]
    assert (last["image"], last["result"]) == (V2, "succeeded")
    # The key's principal, not the typed name.
    assert (last["approver"], last["comment"]) == ("ann@example.com", "LGTM in the UI")
    assert last["approver_key"] == signers.fingerprint(approver_key)


def test_reject_in_the_ui_switches_nothing(
    cluster: Cluster,
    namespace: str,
    prefect_server: str,
    tmp_path: Path,
    v2_paused: tuple[subprocess.Popen[bytes], str],
    browser_page: Page,  # noqa: F811
) -> None:
    proc, run_id = v2_paused
    before = deploys.active_color(cluster, namespace)
    dialog = open_approval_form(browser_page, prefect_server, run_id, tmp_path / "form.png")
    fill_and_submit(
        browser_page,
        dialog,
        run_id,
        tmp_path / "filled.png",
        approve=False,
        approver="Bob UI",
        comment="not today",
    )
    assert proc.wait(timeout=120) == 4, (tmp_path / "v2.log").read_text()[-2000:]  # rejected
    assert deploys.active_color(cluster, namespace) == before
    idle = {"blue": "green", "green": "blue"}[str(before)]
    assert deploys.replicas(cluster, namespace, idle) == 0
    last = deploys.history(cluster, namespace)[-1]
    assert (last["image"], last["result"]) == (V2, "rejected")
    assert (last["approver"], last["comment"]) == ("Bob UI", "not today")  # no signature needed
    assert last["approver_key"] is None  # and recorded as not verified
