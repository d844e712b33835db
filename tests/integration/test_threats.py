"""Issue 21's attacks, played as an attacker holding each credential would, through the real
Prefect API, the environments' own workers (``bascule worker``, one per environment, each
with its own pool) and the real cluster; and the legitimate paths beside them.

Numbered as the issue's findings. Each refused attack asserts that the run ends Failed,
named Refused (not Crashed: that would start a recovery), with the rule in its message; that
production did not change; and that nothing secret was printed.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
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
from bascule.runpolicy import ENTRYPOINTS
from tests.support import deploys, migrations, signers, workers
from tests.support.access import apply_rbac, env_kubeconfig
from tests.support.cluster import Cluster, wait_for
from tests.support.envs import env_namespace
from tests.support.prefect_server import server_on_cluster

pytestmark = [pytest.mark.cluster, pytest.mark.prefect, pytest.mark.slow]
V1, V2 = "bascule.local/sample-app:v1", "bascule.local/sample-app:v2"
CAROL = "Carol Diaz <carol@example.com>"
DATABASE_VARIABLE = "THREATS_DATABASE_URL"
DATABASE_URL = "postgresql://app:not-a-real-password@127.0.0.1:9/app"  # nothing listens on 9
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
    users: dict[str, workers.OsUser | None]  # each worker's OS user (None: this process's)
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
        # A database URL dev's environment files may name (migrations.database_url); no
        # database answers there.
        local["dev"][DATABASE_VARIABLE] = DATABASE_URL
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
                secret, kubeconfigs, {e: p.pid for e, p in procs.items()}, users,
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


def assert_refused(estate: Estate, run_id: str, rule: str) -> str:
    """The run ended Failed/Refused, naming ``rule`` (a worker's rule, or the flow's words);
    production's history and traffic as they were when the run was started."""
    before = production(estate)
    state = deploys.run_ended(estate.api, run_id)
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
    run = deploys.start_run(
        estate.api, "deploy/dev", {"environment": "dev", "image": V1, "commit": evil}
    )
    message = assert_refused(estate, run, "rule namespace:")
    assert estate.ns("production") in message


# What a branch's Python would say if it ran: on stderr (the worker's log) and in a file.
MARK = "BRANCH-CODE-RAN"
# Files of the checkout a careless worker would import; more are found by
# shadowed_by_the_flow(). Bascule's own package and flow, flows/ and tasks/ where they once
# were, what Python imports at startup from sys.path, and modules the flow imports lazily.
SHADOWS = (
    "bascule/__init__.py",
    "bascule/flows/__init__.py",
    "bascule/flows/deploy.py",
    "flows/deploy.py",
    "tasks/__init__.py",
    "sitecustomize.py",
    "usercustomize.py",
    *(f"{name}/__init__.py" for name in ("yaml", "httpx", "kubernetes", "sqlalchemy", "alembic")),
)
DEPLOY_MODULE = ENTRYPOINTS["deploy"].split(":", 1)[0]


def shadowed_by_the_flow() -> list[str]:
    """A package for each top-level module first imported while the deploy flow's module is.
    Were that module imported by Prefect's engine rather than by bascule.flows.launch, the
    checkout would be sys.path[0] meanwhile (prefect.utilities.importtools.load_module), and
    a package of the checkout by that name would win, stdlib modules included. Found as the
    launcher leaves things: its own imports and the engine's, then the flow's."""
    probe = (
        "import sys, bascule.flows.launch, prefect.engine, prefect.flow_engine\n"
        "import prefect._internal.metrics\n"
        "before = {m.split('.')[0] for m in sys.modules}\n"
        f"import {DEPLOY_MODULE}\n"
        "print(*sorted({m.split('.')[0] for m in sys.modules} - before))\n"
    )
    done = subprocess.run(
        [sys.executable, "-P", "-c", probe],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return [f"{name}/__init__.py" for name in done.stdout.split()]


def attempts(estate: Estate) -> dict[str, tuple[str, str]]:
    """What the attacker's code tries, each a Python expression, with the outcome that keeps
    production's credentials contained: dev's token gets 403 in production's namespace; with
    an OS user per worker, production's kubeconfig and its worker's environment are another
    user's."""
    prod = estate.ns("production")
    kube = "__import__('bascule.kube', fromlist=['Kube'])"
    get = f"{kube}.Kube(outage_tolerance=0).get_or_none"
    forbidden = "KubeError 403"
    tries = {
        "production's source Secret": (f"{get}({kube}.secrets({prod!r}, 'prod-db'))", forbidden),
        "production's Secrets": (f"{get}({kube}.secrets({prod!r}))", forbidden),
        "production's Deployments": (f"{get}({kube}.deployments({prod!r}))", forbidden),
    }
    if estate.separated:
        kubeconfig = str(estate.kubeconfigs["production"])
        environ = f"/proc/{estate.pids['production']}/environ"
        tries["production's kubeconfig"] = (f"open({kubeconfig!r}).read()", "PermissionError")
        tries["production worker's environment"] = (
            f"open({environ!r}, 'rb').read()",
            "PermissionError",
        )
        # Its fork server forks runs as production's user: reaching its socket comes first.
        _, forks = workers.fork_server(estate.pids["production"])
        sock = "__import__('socket')"
        tries["production worker's fork server"] = (
            f"{sock}.socket({sock}.AF_UNIX, {sock}.SOCK_SEQPACKET).connect({str(forks)!r})",
            "PermissionError",
        )
    return tries


def attempt_code(tries: dict[str, tuple[str, str]], say: str) -> str:
    """Python that tries each of ``tries`` and says ``READ what: value`` or ``DENIED what:
    ExceptionType status`` through ``say`` (an expression: a callable taking one string)."""
    lines = [
        f"_say = {say}",
        "def _outcome(exc):",
        "    return f\"{type(exc).__name__} {getattr(exc, 'status', '')}\".strip()",
    ]
    for what, (expression, _) in tries.items():
        lines += [
            "try:",
            f"    _got = {expression}",
            "except BaseException as _exc:",
            f"    _say('DENIED ' + {what!r} + ': ' + _outcome(_exc))",
            "else:",
            f"    _say('READ ' + {what!r} + ': ' + repr(_got))",
        ]
    return "\n".join(lines) + "\n"


def shadow(name: str, markers: Path, tries: dict[str, tuple[str, str]]) -> str:
    """The branch's ``name``: if anything imports it, it says so on stderr, leaves a file in
    ``markers`` and tries production's credentials."""
    line = f"{MARK} {name}"
    marker = markers / name.replace("/", "--")
    return "\n".join(
        [
            f'"""The branch\'s {name}: runs only if the worker imports it."""',
            "import sys",
            f"print({line!r}, file=sys.stderr, flush=True)",
            "try:",
            f"    open({str(marker)!r}, 'w').write({line!r})",
            "except OSError as exc:",
            "    print(exc, file=sys.stderr, flush=True)",
            attempt_code(tries, "lambda text: print(text, file=sys.stderr, flush=True)"),
        ]
    )


def as_worker(estate: Estate, environment: str, code: str) -> subprocess.CompletedProcess[str]:
    """``code`` run as ``environment``'s worker's OS user, with its interpreter."""
    user = estate.users[environment]
    command = [*user.prefix(), user.python] if user else [sys.executable]
    env = {**os.environ, **(user.env() if user else {})}
    return subprocess.run(
        [*command, "-c", code], env=env, capture_output=True, text=True, timeout=120, check=False
    )


def run_logs(api: str, run_id: str) -> list[str]:
    found = httpx.post(
        f"{api}/logs/filter", json={"logs": {"flow_run_id": {"any_": [run_id]}}}, timeout=30
    )
    found.raise_for_status()
    return [entry["message"] for entry in found.json()]


def test_1_a_branchs_python_files_never_run_on_devs_worker(estate: Estate) -> None:
    """Credential: push rights on a branch, and dev runs branches. The worker clones the
    branch's commit and runs its own installed Bascule there (python -P -m
    bascule.flows.launch). The branch ships Python files that shadow what a careless worker
    would import: Bascule's package and flow, flows/ and tasks/ as they once were,
    sitecustomize, and the modules the flow imports, stdlib ones included. Each would mark
    that it ran and try production's credentials; none is imported. The deploy completes,
    by the installed Bascule."""
    markers = estate.logs["dev"].parent / f"markers-{uuid.uuid4().hex[:6]}"
    markers.mkdir()
    markers.chmod(0o777)  # the dev worker's user may write there
    tries = attempts(estate)
    # A marker works where the run executes: dev's worker's user leaves one.
    control = as_worker(estate, "dev", shadow("control", markers, tries))
    assert (markers / "control").is_file() and MARK in control.stderr, control
    (markers / "control").unlink()
    names = sorted({*SHADOWS, *shadowed_by_the_flow()})

    def plant(work: Path) -> None:
        for name in names:
            path = work / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(shadow(name, markers, tries))

    branch = branch_commit(estate, "shadows", "dev: Python of our own", change=plant)
    run = deploys.start_run(
        estate.api, "deploy/dev", {"environment": "dev", "image": V2, "commit": branch}
    )
    state = deploys.run_ended(estate.api, run, 240)
    ran = sorted(p.name for p in markers.iterdir())
    said = [
        line
        for line in [*run_logs(estate.api, run), *estate.worker_log("dev").splitlines()]
        if MARK in line
    ]
    assert not ran and not said, (ran, said)
    assert state["type"] == "COMPLETED", (state, estate.worker_log("dev")[-3000:])
    last = deploys.history(estate.cluster, estate.ns("dev"))[-1]
    assert (last["commit"], last["image"], last["result"]) == (branch, V2, "succeeded"), last
    color = deploys.active_color(estate.cluster, estate.ns("dev"))
    serving = estate.cluster.get_json("-n", estate.ns("dev"), "deployment", f"sample-app-{color}")
    assert serving["spec"]["template"]["spec"]["containers"][0]["image"].startswith(V2), serving


# An Alembic revision of the branch: its module-level code runs when Alembic reads the chain.
EVIL_REVISION = """\"\"\"Adds nothing.\"\"\"

from prefect import get_run_logger

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None
phase = "expand"

{attempts}

def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
"""


def test_1_a_branchs_migrations_on_dev_cannot_read_productions_credentials(
    estate: Estate,
) -> None:
    """Credential: push rights on a branch. The worker imports nothing of the checkout, but
    the app's migrations are the app's code, and they run on the worker's machine: the
    migration plan reads the branch's Alembic revisions in the run's process (Alembic imports
    each revision file; its offline mode runs env.py), with the process runner and the job
    runner alike (the job runner's Job only reads the database's revision first). A revision
    tries production's Secret through the API, then production's kubeconfig file and the
    production worker's environment: dev's token gets 403; the files are another OS user's.
    No database answers, so the run then fails; what matters is what was tried."""
    tries = attempts(estate)
    code = EVIL_REVISION.format(attempts=attempt_code(tries, "get_run_logger().info"))

    def evil(work: Path) -> None:
        ini = migrations.scripts(work, ("0003_steal.py", code))
        section = migrations.section(Path("..") / ini.relative_to(work), DATABASE_VARIABLE)
        with (work / "deployments" / "dev.yaml").open("a") as dev:
            dev.write(yaml.safe_dump({"migrations": section}, sort_keys=False))

    branch = branch_commit(estate, "steal", "dev: a new migration", change=evil)
    run = deploys.start_run(
        estate.api, "deploy/dev", {"environment": "dev", "image": V1, "commit": branch}
    )
    state = deploys.run_ended(estate.api, run, 240)

    def tried() -> list[str] | None:
        """The run's log lines once every attempt has logged (logs reach the API a moment
        after the state)."""
        lines = run_logs(estate.api, run)
        done = {m.split(":", 1)[0] for m in lines if m.startswith(("DENIED ", "READ "))}
        return lines if len(done) >= len(tries) else None

    logs = wait_for(tried, 30, what=f"the attempts in the run's log (the run ended {state})")
    outcomes = sorted({m for m in logs if m.startswith(("DENIED ", "READ "))})
    assert outcomes == sorted(f"DENIED {w}: {denied}" for w, (_, denied) in tries.items()), logs
    token = yaml.safe_load(estate.kubeconfigs["production"].read_text())["users"][0]["user"]
    for value in (estate.secret, token["token"]):
        assert value not in "\n".join(logs) + estate.worker_log("dev")
    if not estate.separated:
        print("workers share an OS user here (not root): file and process reads not tried")


FORK_REQUEST = """
import json, socket
from bascule.forkserver import MAX_MESSAGE, Request, decode_reply, encode_request
conn = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
conn.connect({path!r})
asked = Request(cwd="/", env={{"KUBECONFIG": {kubeconfig!r}}}, argv=["-c", "pass"])
socket.send_fds(conn, [encode_request(asked)], [0, 1, 2])
print(json.dumps(vars(decode_reply(conn.recv(MAX_MESSAGE)))))
"""


def test_1_code_as_devs_worker_cannot_have_productions_fork_server_fork(estate: Estate) -> None:
    """Credential: code running as dev's worker's OS user (a branch's migrations run there,
    above). Production's worker forks its runs from a fork server of production's user; a run
    it forked would hold production's credentials. Its socket is in a directory only that user
    enters: the migration above gets PermissionError. Here the directory and the socket are
    opened to everyone, as a mistake on the machine could, and the server still refuses: it
    forks for its own user only (SO_PEERCRED), and goes on serving."""
    if not estate.separated:
        pytest.skip("workers share an OS user here (not root): nothing to cross")
    server, path = workers.fork_server(estate.pids["production"])
    modes = {p: p.stat().st_mode & 0o777 for p in (path.parent, path)}
    code = FORK_REQUEST.format(path=str(path), kubeconfig=str(estate.kubeconfigs["production"]))
    try:
        path.parent.chmod(0o711)
        path.chmod(0o777)
        done = as_worker(estate, "dev", code)
    finally:
        for opened, mode in modes.items():
            opened.chmod(mode)
    assert done.returncode == 0, done.stderr[-3000:]
    dev, production = (estate.users[e] for e in ("dev", "production"))
    assert dev is not None and production is not None
    refused = f"fork request from uid {dev.uid}, not the server's {production.uid}"
    assert json.loads(done.stdout) == {"pid": None, "exit": None, "refused": refused}
    os.kill(server, 0)  # still there for production's own runs


def test_1_dev_deployment_cannot_run_production(estate: Estate) -> None:
    """Credential: a Prefect API key (dev's GitHub environment holds one). deploy/dev asked
    for environment=production lands on dev's worker, which runs only dev."""
    run = deploys.start_run(estate.api, "deploy/dev", {"environment": "production", "image": V1})
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
    run = deploys.start_run(estate.api, "deploy/production", parameters, job_variables)
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
    run = deploys.start_run(estate.api, "deploy/production", {**parameters, "image": V1})
    assert_refused(estate, run, f"rule {rule}:")


def test_1_a_branch_cannot_run_in_production(estate: Estate) -> None:
    """Credential: push rights on a branch. Its commit, started on production's deployment
    (any API credential can), is not on the default branch."""
    branch = branch_commit(estate, "unmerged", "an unreviewed change")
    run = deploys.start_run(
        estate.api, "deploy/production", {"environment": "production", "commit": branch}
    )
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
    run = deploys.start_run(
        estate.api, "deploy/dev", {"environment": "dev", "image": V1, "commit": branch}
    )
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
    run = deploys.start_run(
        estate.api, "deploy/dev", {"environment": "dev", "image": V1, "commit": unsigned}
    )
    assert_refused(estate, run, "rule signed-commit:")


def test_pull_steps_edited_through_the_api_are_refused(estate: Estate) -> None:
    """Credential: a Prefect API key, which can edit a deployment's pull steps: they would
    run in the flow run's process, before the flow."""
    deployment = httpx.get(f"{estate.api}/deployments/name/deploy/production").json()
    evil = [{"prefect.deployments.steps.run_shell_script": {"script": "cat $KUBECONFIG"}}]
    edit = httpx.patch(f"{estate.api}/deployments/{deployment['id']}", json={"pull_steps": evil})
    assert edit.status_code == 204, edit.text
    try:
        run = deploys.start_run(
            estate.api, "deploy/production", {"environment": "production", "image": V1}
        )
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
        run = deploys.start_run(
            estate.api, "deploy/production", {"environment": "production", "image": V1}
        )
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
    run = deploys.start_run(
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
    run = deploys.start_run(
        estate.api, "rollback/production", {"environment": "production", "to_release": v2["id"]}
    )
    assert_refused(estate, run, "a rollback returns only to a release that succeeded here")

    # v2 approved this time, then rolled back: v1 serves again.
    run_id, proc, log = production_deploy(estate, pinned, rerun="approved")
    approve(estate, run_id, "ann")
    assert proc.wait(timeout=240) == 0, log.read_text()[-3000:]
    run = deploys.start_run(estate.api, "rollback/production", {"environment": "production"})
    state = deploys.run_ended(estate.api, run, 240)
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
    run_id = deploys.paused_run(
        estate.api, estate.cluster, estate.ns("production"), image,
        ignore={r["id"] for r in production(estate)[0]}, timeout=240,
    )  # fmt: skip
    return run_id, proc, log


def approve(estate: Estate, run_id: str, who: str) -> None:
    res = deploys.run(estate.api, "approve", run_id, "--key", str(estate.keys[who]))
    assert res.returncode == 0, res.stderr
