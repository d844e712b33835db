"""Issue 21's attacks, played as an attacker holding each credential would, through the real
Prefect API, the environments' own workers (``bascule worker``, one per environment, each
with its own pool) and the real cluster; and the legitimate paths beside them.

Numbered as the issue's findings. Each refused attack asserts that the run ends Failed,
named Refused (not Crashed: that would start a recovery), with the rule in its message; that
production did not change; and that nothing secret was printed.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from bascule import evidence as ev
from tests.support import deploys, signers, workers
from tests.support.access import apply_rbac, env_kubeconfig
from tests.support.cluster import Cluster, wait_for
from tests.support.envs import env_namespace
from tests.support.prefect_server import server_on_cluster

pytestmark = [pytest.mark.cluster, pytest.mark.prefect, pytest.mark.slow]
V1, V2 = "bascule.local/sample-app:v1", "bascule.local/sample-app:v2"
CAROL = "Carol Diaz <carol@example.com>"
ENVIRONMENTS = ("dev", "staging", "production")
DEPLOYMENTS = (
    "deploy/dev",
    "deploy/staging",
    "deploy/production",
    "rollback/production",
)


@dataclass
class Estate:
    """A team's setup: its repository, the three environments' namespaces and workers."""

    api: str
    cluster: Cluster
    repo: workers.Repository
    base: str  # the namespace names derive from it (tests.support.envs.env_namespace)
    logs: dict[str, Path]
    main: str  # the commit of main's head, by Carol
    old: str  # its parent on main
    keys: dict[str, Path]  # approvers' keys, by name: ann's and carol's are listed
    secret: str  # the value of production's source Secret
    kubeconfigs: dict[str, Path]  # each worker's, by environment
    pids: dict[str, int]  # each worker's process
    separated: bool  # each worker runs as an OS user of its own

    def ns(self, environment: str) -> str:
        return env_namespace(self.base, environment)

    def worker_log(self, environment: str) -> str:
        return self.logs[environment].read_text()


@pytest.fixture(scope="module")
def estate(cluster: Cluster) -> Iterator[Estate]:
    """The team's repository (main: release 0, then release 1 by Carol), each environment's
    Roles (bascule rbac) and kubeconfig (bascule kubeconfig), and its worker with that
    kubeconfig alone, as an OS user of its own where this runs as root; on a Prefect server of
    their own, whose deploy/<env> deployments and pools no other test's workers serve (the
    session's server runs other modules at the same time: tests/support/shared.py)."""
    with server_on_cluster(cluster) as server:
        yield from _estate(cluster, server.api_url)


def _estate(cluster: Cluster, prefect_server: str) -> Iterator[Estate]:
    # Not pytest's tmp_path: the workers' users must reach the repository.
    tmp = Path(tempfile.mkdtemp(prefix="bascule-threats-"))
    tmp.chmod(0o711)
    base = f"t-{uuid.uuid4().hex[:10]}"
    try:
        for environment in ENVIRONMENTS:
            cluster.create_namespace(env_namespace(base, environment))
        secret = f"prod-db-{uuid.uuid4().hex}"
        cluster.kubectl(
            "create", "secret", "generic", "prod-db", f"--from-literal=url={secret}",
            "-n", env_namespace(base, "production"),
        )  # fmt: skip
        repo = workers.Repository.make(tmp / "repo")
        keys = {name: signers.keypair(tmp / "keys", name) for name in ("ann", "carol")}
        # Staging's worker's evidence key, outside the repository: production lists its public
        # half (promotion.evidence_signers), staging's worker alone holds it.
        evidence = signers.keypair(tmp / "staging-worker", "evidence")
        rules = production_rules(keys, evidence)
        old = repo.commit(base, "release 0", change=rules, author=CAROL)
        main = repo.commit(base, "release 1", change=rules, author=CAROL)
        repo.push()
        workers.register(prefect_server, tmp / "prefect.yaml", only=DEPLOYMENTS)
        users, kubeconfigs = {}, {}
        for environment in ENVIRONMENTS:
            ns = env_namespace(base, environment)
            apply_rbac(cluster, repo.work / "deployments", environment)
            user = users[environment] = workers.os_user(f"bascule-test-{environment}", tmp)
            kubeconfig = env_kubeconfig(cluster, environment, ns, user.home if user else tmp)
            if user is not None:
                user.own(kubeconfig)
                # git refuses a repository another user owns unless told it is safe.
                user.home.joinpath(".gitconfig").write_text("[safe]\n\tdirectory = *\n")
                user.own(user.home.joinpath(".gitconfig"))
            kubeconfigs[environment] = kubeconfig
        local = {e: {"KUBECONFIG": str(kubeconfigs[e])} for e in ENVIRONMENTS}
        if users["staging"] is not None:  # its own copy, only its user can read
            held = shutil.copy(evidence, users["staging"].home / "evidence")
            evidence = users["staging"].own(Path(held))
        local["staging"][ev.KEY_VARIABLE] = str(evidence)
        logs = {environment: tmp / f"{environment}-worker.log" for environment in ENVIRONMENTS}
        with contextlib.ExitStack() as stack:
            procs = {
                environment: stack.enter_context(
                    workers.bascule_worker(
                        prefect_server,
                        logs[environment],
                        environment,
                        repo.bare,
                        (env_namespace(base, environment),),
                        local[environment],
                        users[environment],
                    )
                )
                for environment in ENVIRONMENTS
            }
            yield Estate(
                prefect_server, cluster, repo, base, logs, main, old, keys,
                secret, kubeconfigs, {e: p.pid for e, p in procs.items()},
                separated=all(users.values()),
            )  # fmt: skip
    finally:
        for environment in ENVIRONMENTS:
            cluster.kubectl(
                "delete", "namespace", env_namespace(base, environment), "--wait=false",
                check=False,
            )  # fmt: skip
        shutil.rmtree(tmp, ignore_errors=True)


def production_rules(keys: dict[str, Path], evidence: Path) -> Callable[[Path], None]:
    """Production as shipped: promotion from staging, with the evidence staging's worker
    signs with ``evidence``; signed approvals by listed keys, four eyes (the commit's author
    cannot approve it)."""

    def change(work: Path) -> None:
        path = work / "deployments" / "production.yaml"
        data = yaml.safe_load(path.read_text())
        data["promote_from"] = "staging"
        public = evidence.with_suffix(".pub").read_text().strip()
        line = f'staging namespaces="{ev.NAMESPACE}" {public}\n'
        (work / "deployments" / "evidence_signers").write_text(line)
        data["promotion"] = {"evidence_signers": "evidence_signers"}
        data["approval"] |= {"allowed_signers": "allowed_signers", "four_eyes": True}
        data["approval"]["timeout_seconds"] = 300
        data["secrets"] = {"DB_URL": {"kubernetes_secret": {"name": "prod-db", "key": "url"}}}
        listed = {f"{name}@example.com": key for name, key in keys.items()}
        signers.allowed_signers(work / "deployments" / "allowed_signers", listed)
        path.write_text(yaml.safe_dump(data, sort_keys=False))

    return change


def start(
    api: str,
    deployment: str,
    parameters: dict[str, Any],
    job_variables: dict[str, Any] | None = None,
) -> str:
    """A flow run of ``deployment`` through the API, as any API credential can start one."""
    found = httpx.get(f"{api}/deployments/name/{deployment}", timeout=30)
    found.raise_for_status()
    made = httpx.post(
        f"{api}/deployments/{found.json()['id']}/create_flow_run",
        json={"parameters": parameters, "job_variables": job_variables or {}},
        timeout=30,
    )
    assert made.status_code == 201, made.text
    run_id: str = made.json()["id"]
    return run_id


def ended(api: str, run_id: str, timeout: float = 120) -> dict[str, Any]:
    def final() -> dict[str, Any] | None:
        state: dict[str, Any] = httpx.get(f"{api}/flow_runs/{run_id}", timeout=30).json()["state"]
        return state if state["type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED") else None

    return wait_for(final, timeout, what=f"flow run {run_id} to end")


def assert_refused(estate: Estate, run_id: str, rule: str) -> str:
    """The run ended Failed/Refused, naming ``rule`` (a worker's rule, or the flow's words);
    production's history and traffic as they were when the run was started."""
    before = production(estate)
    state = ended(estate.api, run_id)
    assert (state["type"], state["name"]) == ("FAILED", "Refused"), state
    message: str = state["message"]
    assert rule in message, message
    assert production(estate) == before
    return message


def production(estate: Estate) -> tuple[list[dict[str, Any]], str | None]:
    ns = estate.ns("production")
    return deploys.history(estate.cluster, ns), deploys.active_color(estate.cluster, ns)


def test_a_dev_deploy_runs_through_its_own_worker(estate: Estate) -> None:
    res = deploys.run(
        estate.api, "trigger", "dev", "--image", V1, "--commit", estate.main, "--timeout", "240"
    )
    assert res.returncode == 0, res.stdout[-3000:] + estate.worker_log("dev")[-3000:]
    (record,) = deploys.history(estate.cluster, estate.ns("dev"))
    assert (record["commit"], record["result"]) == (estate.main, "succeeded"), record


def test_1_a_pushed_branch_cannot_point_dev_at_production(estate: Estate) -> None:
    """Credential: push rights on a branch, no review. The branch's dev.yaml names
    production's namespace."""
    evil = branch_commit(
        estate, "evil", "dev, to production's namespace", {"namespace": estate.ns("production")}
    )
    run = start(estate.api, "deploy/dev", {"environment": "dev", "image": V1, "commit": evil})
    message = assert_refused(estate, run, "rule namespace:")
    assert estate.ns("production") in message


EVIL_FLOW = """
from pathlib import Path

from prefect import flow, get_run_logger

from bascule import kube as k


@flow(name="deploy")
def deploy(environment: str, image: str | None = None, commit: str | None = None) -> None:
    log = get_run_logger()
    kube = k.Kube(outage_tolerance=0)
    tries = {tries}
    for what, attempt in tries.items():
        try:
            got = attempt()
        except BaseException as exc:
            log.info("DENIED %s: %s", what, type(exc).__name__)
        else:
            log.info("READ %s: %s", what, got)
"""


def test_1_a_branchs_own_code_on_dev_cannot_read_productions_credentials(estate: Estate) -> None:
    """Credential: push rights on a branch. Its flows/deploy.py is the attacker's code, and
    dev runs branches: it runs, on dev's worker, and tries production's Secret through the
    API, then, on the worker's machine, production's kubeconfig file and the production
    worker's environment. Dev's token gets 403; the files are another OS user's."""
    prod = estate.ns("production")
    tries = {
        "production's source Secret": f"lambda: kube.get_or_none(k.secrets({prod!r}, 'prod-db'))",
        "production's Secrets": f"lambda: kube.get_or_none(k.secrets({prod!r}))",
        "production's Deployments": f"lambda: kube.get_or_none(k.deployments({prod!r}))",
    }
    if estate.separated:
        kubeconfig = str(estate.kubeconfigs["production"])
        tries["production's kubeconfig"] = f"lambda: Path({kubeconfig!r}).read_text()"
        environ = f"/proc/{estate.pids['production']}/environ"
        tries["production worker's environment"] = f"lambda: Path({environ!r}).read_bytes()"
    code = EVIL_FLOW.format(tries="{" + ", ".join(f"{w!r}: {a}" for w, a in tries.items()) + "}")

    def evil(work: Path) -> None:
        (work / "flows" / "deploy.py").write_text(code)

    branch = branch_commit(estate, "steal", "dev: a new deploy flow", change=evil)
    run = start(estate.api, "deploy/dev", {"environment": "dev", "image": V1, "commit": branch})
    state = ended(estate.api, run)
    assert state["type"] == "COMPLETED", state

    def tried() -> list[str] | None:
        """The run's log lines once every attempt has logged (logs reach the API a moment
        after the state)."""
        found = httpx.post(
            f"{estate.api}/logs/filter",
            json={"logs": {"flow_run_id": {"any_": [run]}}},
            timeout=30,
        ).json()
        lines = [entry["message"] for entry in found]
        done = [m for m in lines if m.startswith(("DENIED ", "READ "))]
        return lines if len(done) >= len(tries) else None

    logs = wait_for(tried, 30, what="the attempts in the run's log")
    denied = [m for m in logs if m.startswith("DENIED ")]
    assert len(denied) == len(tries) and not any(m.startswith("READ ") for m in logs), logs
    token = yaml.safe_load(estate.kubeconfigs["production"].read_text())["users"][0]["user"]
    for value in (estate.secret, token["token"]):
        assert value not in "\n".join(logs) + estate.worker_log("dev")
    if not estate.separated:
        print("workers share an OS user here (not root): file and process reads not tried")


def test_1_dev_deployment_cannot_run_production(estate: Estate) -> None:
    """Credential: a Prefect API key (dev's GitHub environment holds one). deploy/dev asked
    for environment=production lands on dev's worker, which runs only dev."""
    run = start(estate.api, "deploy/dev", {"environment": "production", "image": V1})
    assert_refused(estate, run, "rule environment:")


@pytest.mark.parametrize(
    ("job_variables", "rule"),
    [
        ({"env": {"BASCULE_REPOSITORY": "https://attacker.invalid/bascule.git"}}, "env"),
        ({"command": "sh -c 'cat $KUBECONFIG'"}, "command"),
    ],
    ids=["repository", "command"],
)
def test_2_job_variables_cannot_change_what_runs(
    estate: Estate, job_variables: dict[str, Any], rule: str
) -> None:
    """Credential: a Prefect API key. Job variables on a production run."""
    parameters = {"environment": "production", "image": V1}
    run = start(estate.api, "deploy/production", parameters, job_variables)
    assert_refused(estate, run, f"rule {rule}:")


@pytest.mark.parametrize(
    ("parameters", "rule"),
    [
        ({"environment": "../../x/production"}, "environment"),
        ({"environment": "production", "config_dir": "/tmp/attacker"}, "config-dir"),
    ],
    ids=["environment-path", "config-dir"],
)
def test_4_the_config_cannot_be_redirected(
    estate: Estate, parameters: dict[str, Any], rule: str
) -> None:
    """Credential: a Prefect API key. Parameters that would load another configuration."""
    run = start(estate.api, "deploy/production", {**parameters, "image": V1})
    assert_refused(estate, run, f"rule {rule}:")


def test_1_a_branch_cannot_run_in_production(estate: Estate) -> None:
    """Credential: push rights on a branch. Its commit, started on production's deployment
    (any API credential can), is not on the default branch."""
    branch = branch_commit(estate, "unmerged", "an unreviewed change")
    run = start(estate.api, "deploy/production", {"environment": "production", "commit": branch})
    assert_refused(estate, run, "rule default-branch:")


def test_1_a_branch_cannot_hand_dev_other_credentials(estate: Estate) -> None:
    """Credential: push rights on a branch. Its dev.yaml names another kubeconfig (a
    production one, on a machine that holds both)."""
    branch = branch_commit(
        estate,
        "creds",
        "dev, with production's kubeconfig",
        {"kube": {"kubeconfig": "/etc/bascule/production/kubeconfig"}},
    )
    run = start(estate.api, "deploy/dev", {"environment": "dev", "image": V1, "commit": branch})
    assert_refused(estate, run, "rule credentials:")


def test_1_an_unsigned_commit_is_refused_where_signatures_are_required(estate: Estate) -> None:
    """Credential: push rights on a branch, without a listed signing key. The environment's
    file requires commits signed by Ann's key (commit_signers); the commit is not."""

    def require_signatures(work: Path) -> None:
        public = estate.keys["ann"].with_suffix(".pub").read_text().strip()
        listed = work / "deployments" / "commit_signers"
        listed.write_text(f'ann@example.com namespaces="git" {public}\n')
        with (work / "deployments" / "dev.yaml").open("a") as dev:
            dev.write("commit_signers: commit_signers\n")

    unsigned = branch_commit(estate, "unsigned", "dev, unsigned", change=require_signatures)
    run = start(estate.api, "deploy/dev", {"environment": "dev", "image": V1, "commit": unsigned})
    assert_refused(estate, run, "rule signed-commit:")


def test_pull_steps_edited_through_the_api_are_refused(estate: Estate) -> None:
    """Credential: a Prefect API key, which can edit a deployment's pull steps: they would
    run in the flow run's process, before the flow."""
    deployment = httpx.get(f"{estate.api}/deployments/name/deploy/production").json()
    evil = [{"prefect.deployments.steps.run_shell_script": {"script": "cat $KUBECONFIG"}}]
    edit = httpx.patch(f"{estate.api}/deployments/{deployment['id']}", json={"pull_steps": evil})
    assert edit.status_code == 204, edit.text
    try:
        run = start(estate.api, "deploy/production", {"environment": "production", "image": V1})
        assert_refused(estate, run, "rule pull-steps:")
    finally:
        httpx.patch(f"{estate.api}/deployments/{deployment['id']}", json={"pull_steps": []})


def test_the_pools_base_job_template_edited_through_the_api_is_refused(estate: Estate) -> None:
    """Credential: a Prefect API key, which can edit a work pool's base job template."""
    pool = httpx.get(f"{estate.api}/work_pools/bascule-production").json()
    template = pool["base_job_template"]
    evil = {
        **template,
        "job_configuration": {**template["job_configuration"], "command": "sh -c 'env'"},
    }
    edit = httpx.patch(
        f"{estate.api}/work_pools/bascule-production", json={"base_job_template": evil}
    )
    assert edit.status_code == 204, edit.text
    try:
        workers.pool_reread(estate.api, "bascule-production")
        run = start(estate.api, "deploy/production", {"environment": "production", "image": V1})
        assert_refused(estate, run, "rule command:")
    finally:
        httpx.patch(
            f"{estate.api}/work_pools/bascule-production", json={"base_job_template": template}
        )
        workers.pool_reread(estate.api, "bascule-production")


def test_production_takes_a_signed_four_eyes_approval_of_a_staging_verified_digest(
    estate: Estate,
) -> None:
    """The legitimate path, through the workers: staging verifies v1, production deploys
    its digest once an approver who did not write the commit signs. Finding 6 on the way:
    Carol, who wrote the commit and holds a listed key (and, like anyone here, a Prefect
    credential), cannot approve it alone."""
    pinned = staged(estate, V1)
    run_id, proc, log = production_deploy(estate, pinned)
    approve(estate, run_id, "carol")
    deploys.paused_again(estate.api, run_id, 1)
    assert proc.poll() is None and production(estate)[1] is None
    approve(estate, run_id, "ann")
    assert proc.wait(timeout=240) == 0, log.read_text()[-3000:]
    last = production(estate)[0][-1]
    assert (last["result"], last["image"], last["commit"]) == ("succeeded", pinned, estate.main)
    assert [s["principal"] for s in last["signers"]] == ["ann@example.com"]
    refused = [s["detail"] for s in last["steps"] if s["name"] == "approval-refused"]
    assert len(refused) == 1 and refused[0].startswith("four eyes: carol@example.com"), refused


def test_2_an_older_commit_of_main_cannot_run_in_production(estate: Estate) -> None:
    """Credential: a Prefect API key. The run names main's previous commit: code from before
    production's serving release (a downgrade to rules that were weaker)."""
    assert production(estate)[0], "needs the production release of the test before"
    run = start(
        estate.api,
        "deploy/production",
        {"environment": "production", "image": V1, "commit": estate.old},
    )
    assert_refused(estate, run, "rule no-downgrade:")


def test_3_a_rollback_returns_only_to_a_release_that_succeeded_there(estate: Estate) -> None:
    """Credential: a Prefect API key. rollback/production with to_release naming a release
    production rejected would deploy it without approval. Then the legitimate rollback, to
    the previous good release."""
    pinned = staged(estate, V2)
    run_id, proc, log = production_deploy(estate, pinned)
    rejected = deploys.run(estate.api, "reject", run_id, "--as", "ann", "--comment", "not yet")
    assert rejected.returncode == 0, rejected.stderr
    assert proc.wait(timeout=120) == 4, log.read_text()[-3000:]
    (v1, v2) = production(estate)[0][-2:]
    assert (v1["result"], v2["result"]) == ("succeeded", "rejected")
    run = start(
        estate.api, "rollback/production", {"environment": "production", "to_release": v2["id"]}
    )
    assert_refused(estate, run, "a rollback returns only to a release that succeeded here")

    # v2 approved this time, then rolled back: v1 serves again.
    run_id, proc, log = production_deploy(estate, pinned, rerun="approved")
    approve(estate, run_id, "ann")
    assert proc.wait(timeout=240) == 0, log.read_text()[-3000:]
    run = start(estate.api, "rollback/production", {"environment": "production"})
    state = ended(estate.api, run, 240)
    assert state["type"] == "COMPLETED", state
    history, active = production(estate)
    assert history[-1]["kind"] == "rollback" and history[-1]["image"] == v1["image"], history[-1]
    assert active == v1["color"]


def branch_commit(
    estate: Estate,
    branch: str,
    message: str,
    overrides: dict[str, Any] | None = None,
    change: Callable[[Path], None] | None = None,
) -> str:
    """A commit on ``branch`` off main, pushed: what anyone with push rights can make."""
    repo = estate.repo
    workers.git(repo.work, "checkout", "-q", "-b", branch, estate.main)
    try:
        sha = repo.commit(estate.base, message, overrides, ("dev",), change)
        repo.push(branch)
    finally:
        workers.git(repo.work, "checkout", "-q", "main")
    return sha


def staged(estate: Estate, image: str) -> str:
    """``image`` deployed to staging through its worker; its digest, pinned."""
    res = deploys.run(estate.api, "trigger", "staging", "--image", image, "--commit", estate.main)
    assert res.returncode == 0, res.stdout[-3000:] + estate.worker_log("staging")[-3000:]
    # The tag too: the version check compares the app's answer with it.
    return f"{image}@{deploys.history(estate.cluster, estate.ns('staging'))[-1]['digest']}"


def production_deploy(
    estate: Estate, image: str, rerun: str | None = None
) -> tuple[str, subprocess.Popen[bytes], Path]:
    """`bascule trigger production`, as the release workflow starts it, paused for approval:
    its run's id, the trigger's process and its log."""
    log = estate.logs["production"].with_name(f"trigger-{uuid.uuid4().hex[:6]}.log")
    args = ["trigger", "production", "--image", image, "--commit", estate.main, "--timeout", "300"]
    proc = deploys.start(estate.api, *args, *(("--rerun", rerun) if rerun else ()), log=log)
    asking = deploys.wait_phase(
        estate.cluster, estate.ns("production"), image, {"awaiting-approval"}, 240,
        ignore={r["id"] for r in production(estate)[0]},
    )  # fmt: skip
    return asking["flow_run_id"], proc, log


def approve(estate: Estate, run_id: str, who: str) -> None:
    res = deploys.run(estate.api, "approve", run_id, "--key", str(estate.keys[who]))
    assert res.returncode == 0, res.stderr
