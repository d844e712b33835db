"""The tests' forked `bascule` commands (tests/support/cliforks.py) behave as the processes
they replace: exit status, stdout and stderr apart or together, working directory and
environment of their own."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.support import cliforks
from tests.support.cluster import REPO


def env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), **extra}


def test_a_forked_command_has_its_own_cwd_env_streams_and_exit_status(tmp_path: Path) -> None:
    # --dir is relative to its own working directory.
    ok = cliforks.run(["validate", "--dir", "deployments", "dev"], cwd=REPO, env=env(), timeout=120)
    assert (ok.returncode, ok.stderr) == (0, ""), ok
    assert "sample-app" in ok.stdout
    assert cliforks.run(["--version"], cwd=tmp_path, env=env(), timeout=120).stdout.startswith(
        "bascule "
    )
    missing = cliforks.run(["validate", "--dir", "deployments", "dev"], cwd=tmp_path, env=env(),
                           timeout=120)  # fmt: skip
    assert missing.returncode == 2 and "deployments/dev.yaml: file not found" in missing.stdout
    # Its own environment: the kubeconfig it names.
    kubeconfig = tmp_path / "no-such-kubeconfig"
    status = cliforks.run(["status", "--dir", "deployments", "dev"], cwd=REPO,
                          env=env(KUBECONFIG=str(kubeconfig)), timeout=120)  # fmt: skip
    assert status.returncode == 2 and f"kubeconfig {kubeconfig}" in status.stderr, status
    bad = cliforks.run(["no-such-command"], cwd=REPO, env=env(), timeout=120)
    assert (bad.returncode, bad.stdout) == (2, ""), bad
    assert "invalid choice: 'no-such-command'" in bad.stderr
    # Both streams into one file, as deploys.start writes a log.
    log = tmp_path / "both.log"
    with log.open("wb") as out:
        proc = cliforks.start(["no-such-command"], cwd=REPO, env=env(), stdout=out,
                              stderr=subprocess.STDOUT, new_session=True)  # fmt: skip
    assert isinstance(proc, cliforks.ForkedCommand) == cliforks.ENABLED
    assert proc.wait(60) == 2 and proc.poll() == 2
    assert "invalid choice" in log.read_text()
