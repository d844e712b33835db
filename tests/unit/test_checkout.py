"""The worker's checkouts (bascule/checkout.py) from its mirror of a real git repository: the
mirror sees what the remote has now (a new commit, a force-pushed default branch, a deleted
branch), never what it had; a commit the remote lacks is not found, even where the mirror
still holds it; runs at once share the mirror; a run's checkout goes with ``release``."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import pytest

from bascule import checkout as co
from bascule.runpolicy import Policy
from tests.support import signers
from tests.support.workers import Repository, git

NS = "checkout-test"


@pytest.fixture
def repo(tmp_path: Path) -> Repository:
    return Repository.make(tmp_path / "remote")


def commit(repo: Repository, message: str, branch: str = "main") -> str:
    sha = repo.commit(NS, message, environments=("dev",))
    repo.push(branch)
    return sha


def clone(
    repo: Repository, tmp_path: Path, commit: str | None, name: str, protected: bool = False
) -> co.Checkout:
    policy = Policy(environment="dev", repository=str(repo.bare), protected=protected)
    return co.clone(policy, commit, tmp_path / name, cache=tmp_path / "cache")


def worktrees(tmp_path: Path, repo: Repository) -> list[str]:
    """The mirror's worktrees, but the mirror itself."""
    mirror = co.mirror_dir(str(repo.bare), tmp_path / "cache")
    listed = git(mirror, "worktree", "list", "--porcelain").splitlines()
    return [line.split(" ", 1)[1] for line in listed if line.startswith("worktree ")][1:]


def test_a_commit_pushed_after_the_mirror_exists_is_found(repo: Repository, tmp_path: Path) -> None:
    first = commit(repo, "first")
    assert clone(repo, tmp_path, None, "a").commit == first
    second = commit(repo, "second")
    found = clone(repo, tmp_path, second, "b")
    assert (found.found, found.commit, found.on_default_branch) == (True, second, True)
    assert git(tmp_path / "b", "rev-parse", "HEAD") == second
    # Without a commit: the default branch's head as it is now, not as the mirror had it.
    assert clone(repo, tmp_path, None, "c").commit == second
    # An abbreviated id, as the policy lets a run give one.
    assert clone(repo, tmp_path, first[:10], "d").commit == first


def test_a_force_pushed_default_branch_is_seen_as_the_remote_has_it(
    repo: Repository, tmp_path: Path
) -> None:
    first = commit(repo, "first")
    dropped = commit(repo, "dropped")
    assert clone(repo, tmp_path, dropped, "a").on_default_branch
    git(repo.work, "reset", "-q", "--hard", first)
    rewritten = commit(repo, "rewritten")  # pushed with --force
    head = clone(repo, tmp_path, None, "b")
    assert (head.commit, head.on_default_branch) == (rewritten, True)
    # Its objects are still in the mirror, but no branch of the remote has it any more.
    gone = clone(repo, tmp_path, dropped, "c")
    assert (gone.found, gone.commit) == (False, dropped)


def test_descent_from_the_serving_release_is_gits_answer_in_the_checkout(
    repo: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = commit(repo, "first")
    second = commit(repo, "second")
    # What the apps' histories would say serves: ``second``.
    monkeypatch.setattr(co, "_serving_commits", lambda configs: dict.fromkeys(configs, second))
    ahead = clone(repo, tmp_path, second, "a", protected=True)
    assert ahead.serving and set(ahead.serving.values()) == {(second, True)}
    behind = clone(repo, tmp_path, first, "b", protected=True)
    assert behind.serving and set(behind.serving.values()) == {(second, False)}


def test_a_branchs_commit_is_found_but_not_on_the_default_branch(
    repo: Repository, tmp_path: Path
) -> None:
    commit(repo, "main")
    branch = commit(repo, "feature", branch="feature")
    git(repo.work, "reset", "-q", "--hard", "HEAD~1")
    found = clone(repo, tmp_path, branch, "a")
    assert (found.found, found.on_default_branch) == (True, False)
    git(repo.bare, "branch", "-D", "feature")  # deleted on the remote: pruned here
    assert not clone(repo, tmp_path, branch, "b").found


@pytest.mark.parametrize("unknown", ["local", "0123456789abcdef0123456789abcdef01234567"])
def test_a_commit_not_on_the_remote_is_not_found(
    repo: Repository, tmp_path: Path, unknown: str
) -> None:
    commit(repo, "pushed")
    sha = repo.commit(NS, "never pushed") if unknown == "local" else unknown
    missing = clone(repo, tmp_path, sha, "a")
    assert (missing.found, missing.commit) == (False, sha)
    assert not (tmp_path / "a").exists()


def test_a_remote_head_naming_no_branch_leaves_no_default_branch(
    repo: Repository, tmp_path: Path
) -> None:
    sha = commit(repo, "elsewhere", branch="other")  # HEAD still names main, unborn
    assert clone(repo, tmp_path, None, "a") == co.Checkout(commit=co.DEFAULT_NAME, found=False)
    found = clone(repo, tmp_path, sha, "b")
    assert (found.found, found.on_default_branch) == (True, False)


def test_runs_at_once_share_the_mirror(repo: Repository, tmp_path: Path) -> None:
    shas = [commit(repo, f"commit {n}") for n in range(4)]
    results: dict[int, co.Checkout] = {}
    failed: list[BaseException] = []

    def run(n: int) -> None:
        try:
            results[n] = clone(repo, tmp_path, shas[n], f"run{n}")
        except BaseException as exc:  # reported below, not lost in the thread
            failed.append(exc)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(len(shas))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failed, failed
    assert {n: (r.found, r.commit) for n, r in results.items()} == {
        n: (True, sha) for n, sha in enumerate(shas)
    }
    for n, sha in enumerate(shas):
        assert git(tmp_path / f"run{n}", "rev-parse", "HEAD") == sha
    assert sorted(worktrees(tmp_path, repo)) == sorted(str(tmp_path / f"run{n}") for n in range(4))


def test_a_run_waits_while_another_changes_the_mirror(repo: Repository, tmp_path: Path) -> None:
    sha = commit(repo, "first")
    done: list[co.Checkout] = []
    waiting = threading.Thread(target=lambda: done.append(clone(repo, tmp_path, sha, "b")))
    with co._locked(co.mirror_dir(str(repo.bare), tmp_path / "cache")):  # another run's fetch
        waiting.start()
        waiting.join(timeout=2)
        assert waiting.is_alive() and not done
    waiting.join()
    assert [checkout.commit for checkout in done] == [sha]


def test_release_removes_the_checkout_and_its_worktree(repo: Repository, tmp_path: Path) -> None:
    sha = commit(repo, "first")
    clone(repo, tmp_path, sha, "a")
    assert (tmp_path / "a" / "deployments" / "dev.yaml").is_file()
    co.release(str(repo.bare), tmp_path / "a", cache=tmp_path / "cache")
    assert not (tmp_path / "a").exists()
    assert worktrees(tmp_path, repo) == []
    co.release(str(repo.bare), tmp_path / "a", cache=tmp_path / "cache")  # nothing left to do


def test_a_checkout_whose_directory_went_is_forgotten_by_the_next_release(
    repo: Repository, tmp_path: Path
) -> None:
    sha = commit(repo, "first")
    clone(repo, tmp_path, sha, "a")
    shutil.rmtree(tmp_path / "a")  # as a killed worker's temporary directory goes
    clone(repo, tmp_path, sha, "b")
    assert worktrees(tmp_path, repo) == [str(tmp_path / "a"), str(tmp_path / "b")]
    co.release(str(repo.bare), tmp_path / "b", cache=tmp_path / "cache")
    assert worktrees(tmp_path, repo) == []


def test_git_verifies_a_commits_signature_in_the_checkout(repo: Repository, tmp_path: Path) -> None:
    ann = signers.keypair(tmp_path / "keys", "ann")

    def require_signatures(work: Path) -> None:
        public = ann.with_suffix(".pub").read_text().strip()
        (work / "deployments" / "commit_signers").write_text(
            f'ann@example.com namespaces="git" {public}\n'
        )
        with (work / "deployments" / "dev.yaml").open("a") as dev:
            dev.write("commit_signers: commit_signers\n")

    unsigned = repo.commit(NS, "unsigned", environments=("dev",), change=require_signatures)
    signed = signers.commit(repo.work, "ann@example.com", "Ann", ann)
    repo.push()
    assert clone(repo, tmp_path, signed, "a").unsigned == {"deployments/commit_signers": None}
    problem = clone(repo, tmp_path, unsigned, "b").unsigned["deployments/commit_signers"]
    assert problem, problem


def test_a_cache_that_cannot_be_written_is_named(repo: Repository, tmp_path: Path) -> None:
    commit(repo, "first")
    (tmp_path / "file").write_text("")
    with pytest.raises(RuntimeError, match=r"cache .*/file/cache cannot be written"):
        co.clone(
            Policy(environment="dev", repository=str(repo.bare)),
            None,
            tmp_path / "a",
            cache=tmp_path / "file" / "cache",
        )


def test_the_cache_directory_follows_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert co.cache_dir() == tmp_path / "bascule" / "worker"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert co.cache_dir() == tmp_path / "home" / ".cache" / "bascule" / "worker"
    # One mirror per repository URL, whatever characters it holds.
    one, other = (
        co.mirror_dir("https://x/a.git", tmp_path),
        co.mirror_dir("https://x/b.git", tmp_path),
    )
    assert one != other and one.parent == other.parent == tmp_path


def test_the_kubernetes_client_is_kept_until_its_kubeconfig_changes(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    kubeconfig = tmp_path / "kubeconfig"

    def write(token: str) -> None:
        kubeconfig.write_text(
            "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
            "clusters: [{name: k, cluster: {server: 'https://127.0.0.1:9'}}]\n"
            f"users: [{{name: u, user: {{token: {token}}}}}]\n"
            "contexts: [{name: c, context: {cluster: k, user: u}}]\n"
        )

    write("first")
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    monkeypatch.setattr(co, "_kube_made", {})  # none kept from elsewhere, none left behind
    kept = co._kube()
    assert co._kube() is kept
    write("renewed-token")
    renewed = co._kube()
    assert renewed is not kept
    assert renewed.headers() == {"Authorization": "Bearer renewed-token"}
