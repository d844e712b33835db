"""The process worker's checkouts of its repository (bascule/worker.py), and what its policy
(bascule/runpolicy.py ``check_checkout``) needs to know of them.

The worker keeps one bare mirror per repository in its cache directory (``cache_dir``) and
brings it up to date for each run: one ``git fetch`` of the remote's HEAD (its default
branch's head), branches and tags as they are now, forced and pruned, so a rewritten branch
is seen as rewritten and the policy's inputs are the remote's, never an old mirror's. Only
new objects cross the wire. A commit counts as in the repository only if one of the remote's
branches or tags (or its HEAD) reaches it, as in a fresh clone: the mirror may still hold
objects the remote dropped. The run's working tree is a ``git worktree`` of the mirror,
removed after the run (``release``), when git's housekeeping runs too if it is due. A file
lock serialises the changes to a mirror, so a worker's runs can share it at once. git runs
without hooks and without prompts: a checkout is data until the policy allows it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import subprocess
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path

from bascule import config as c
from bascule import history as h
from bascule import kube as k
from bascule.config_files import app_names, load_environment
from bascule.manifests import history_name
from bascule.runpolicy import Checkout, Policy, config_path

GIT_TIMEOUT_S = 120
# Where the fetch keeps the remote's HEAD: outside refs/remotes/origin/, which --prune keeps
# equal to the remote's branches.
DEFAULT_REF = "refs/bascule/default"
# What a run without a commit asks for, as a refusal names it.
DEFAULT_NAME = "origin/HEAD"
_BRANCHES = "refs/remotes/origin/"
_TAGS = "refs/tags/"
# What a clone would hold, forced: a force-pushed branch or moved tag replaces the old one.
_HEAD_REFSPEC = f"+HEAD:{DEFAULT_REF}"
_REFSPECS = (f"+refs/heads/*:{_BRANCHES}*", f"+{_TAGS}*:{_TAGS}*")
# A full object id, SHA-1 or SHA-256.
_OBJECT_ID = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
# Housekeeping (gc, when due) waits for the end of a run (``release``), and runs there inside
# the lock rather than in the background beside the next fetch.
_NO_MAINTENANCE = ("-c", "maintenance.auto=false")
_MAINTENANCE = ("-c", "gc.autoDetach=false", "-c", "maintenance.autoDetach=false")


def cache_dir() -> Path:
    """Where a worker keeps its mirrors: ``$XDG_CACHE_HOME/bascule/worker`` (``~/.cache``
    when that is unset or not absolute, as the XDG base directory spec says)."""
    base = os.environ.get("XDG_CACHE_HOME", "")
    root = Path(base) if os.path.isabs(base) else Path.home() / ".cache"
    return root / "bascule" / "worker"


def mirror_dir(repository: str, cache: Path) -> Path:
    """The mirror of ``repository`` in ``cache``: named by a hash of its URL, which may hold
    characters no file name should."""
    return cache / f"{hashlib.sha256(repository.encode()).hexdigest()[:32]}.git"


def _git(
    *args: str, cwd: Path | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    # No hooks, no credential prompts: the checkout is data until the policy allows it.
    return subprocess.run(
        ["git", "-c", "core.hooksPath=/dev/null", *args],
        cwd=cwd,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=GIT_TIMEOUT_S,
        check=False,
        env={**os.environ, "GIT_TERMINAL_PROMPT": "0"},
    )


@contextlib.contextmanager
def _locked(mirror: Path) -> Iterator[Path]:
    """``mirror``, to this thread alone until the block ends (a lock file beside it, so the
    mirror can be made under the lock)."""
    try:
        mirror.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        lock = mirror.with_name(f"{mirror.name}.lock").open("a")
    except OSError as exc:  # refused as the checkout rule, not a crash of the run
        raise RuntimeError(
            f"the worker's cache {mirror.parent} cannot be written ({exc.strerror}): give "
            "the worker's user a home of its own, or set $XDG_CACHE_HOME"
        ) from exc
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        yield mirror


def _fetch(repository: str, mirror: Path) -> None:
    """Brings ``mirror`` (made if missing) to the remote's branches, tags and HEAD as they
    are now; without ``DEFAULT_REF`` if the remote's HEAD names no commit (an empty
    repository, or a HEAD naming a missing branch). RuntimeError if git cannot."""
    if not (mirror / "HEAD").is_file():
        made = _git("init", "--quiet", "--bare", str(mirror))
        if made.returncode != 0:
            raise RuntimeError(f"git init {mirror} failed: {made.stderr.strip()}")

    def fetch(*refspecs: str) -> subprocess.CompletedProcess[str]:
        # Neither FETCH_HEAD nor the walk that reports forced updates is of use here.
        return _git(
            *_NO_MAINTENANCE, "fetch", "--quiet", "--prune", "--no-tags",
            "--no-write-fetch-head", "--no-show-forced-updates", "--",
            repository, *refspecs, cwd=mirror,
        )  # fmt: skip

    fetched = fetch(_HEAD_REFSPEC, *_REFSPECS)
    if fetched.returncode == 0:
        return
    # A HEAD naming no commit fails the fetch; the branches and tags are still there, as in
    # a clone of such a repository (which has no origin/HEAD).
    without_head = fetch(*_REFSPECS)
    if without_head.returncode != 0:
        raise RuntimeError(f"git fetch {repository} failed: {fetched.stderr.strip()}")
    _git("update-ref", "-d", DEFAULT_REF, cwd=mirror)


def _resolve(mirror: Path, *names: str) -> list[str | None]:
    """The commit each of ``names`` names in ``mirror``, None where none; one git process."""
    asked = "".join(f"{name}^{{commit}}\n" for name in names)
    done = _git("cat-file", "--batch-check=%(objectname)", cwd=mirror, stdin=asked)
    lines = done.stdout.splitlines() if done.returncode == 0 else []
    # "<name> missing" (or ambiguous) where git found no single commit.
    found = [line if _OBJECT_ID.fullmatch(line) else None for line in lines]
    return found if len(found) == len(names) else [None] * len(names)


def _on_remote(mirror: Path, sha: str) -> bool:
    """Whether one of the remote's branches, tags or its HEAD reaches ``sha`` (as fetched
    last): the objects of a branch since rewritten stay in the mirror, not on the remote."""
    refs = _git(
        "for-each-ref", "--count=1", "--format=%(refname)", "--contains", sha,
        _BRANCHES, _TAGS, DEFAULT_REF, cwd=mirror,
    )  # fmt: skip
    return refs.returncode == 0 and bool(refs.stdout.strip())


def clone(
    policy: Policy, commit: str | None, directory: Path, cache: Path | None = None
) -> Checkout:
    """The worker's repository checked out into ``directory`` at ``commit`` (default: the
    head of its default branch), from its mirror in ``cache`` (default: ``cache_dir()``),
    and what the policy needs to know of it. ``release`` removes the checkout."""
    with _locked(mirror_dir(policy.repository, cache or cache_dir())) as mirror:
        _fetch(policy.repository, mirror)
        default, sha = _resolve(mirror, DEFAULT_REF, commit or DEFAULT_REF)
        if sha is None or (sha != default and not _on_remote(mirror, sha)):
            return Checkout(commit=commit or DEFAULT_NAME, found=False)
        # A worktree's HEAD keeps its commit from gc while the run uses it.
        added = _git("worktree", "add", "--quiet", "--detach", str(directory), sha, cwd=mirror)
        if added.returncode != 0:
            raise RuntimeError(f"git worktree add {sha} failed: {added.stderr.strip()}")

    def is_ancestor(older: str, newer: str) -> bool:
        # A history's commit is data: never an option of git's.
        merged = _git(
            "merge-base", "--is-ancestor", "--end-of-options", older, newer, cwd=directory
        )
        return merged.returncode == 0

    cfg_dir = directory / config_path(policy.config_dir)
    configs = _configs(cfg_dir, policy.environment)
    apps = set(configs)
    if policy.app is not None:  # only its app's namespace and serving release count
        configs = {app: cfg for app, cfg in configs.items() if app == policy.app}
    # Only where the descent rule applies, and only in the worker's own namespaces: a
    # configuration aimed elsewhere is refused by the namespace rule, not by a 403.
    serving = _serving_commits(
        {
            app: cfg
            for app, cfg in configs.items()
            if policy.is_protected and (not policy.namespaces or cfg.namespace in policy.namespaces)
        }
    )
    return Checkout(
        commit=sha,
        on_default_branch=sha == default or (default is not None and is_ancestor(sha, default)),
        serving={
            app: None if found is None else (found, is_ancestor(found, sha))
            for app, found in serving.items()
        },
        namespaces={cfg.namespace for cfg in configs.values()},
        apps=apps,
        unsigned={
            str(path.relative_to(directory)): _signature_problem(sha, path, directory)
            for path in {cfg.commit_signers for cfg in configs.values()}
            if path is not None
        },
        credential_fields=sorted(
            {
                f"kube.{name}"
                for cfg in configs.values()
                for name in ("kubeconfig", "context")
                if getattr(cfg.kube, name) is not None
            }
        ),
    )


def release(repository: str, directory: Path, cache: Path | None = None) -> None:
    """Removes the checkout ``clone`` made in ``directory``, if it made one. Never fails: the
    run is over, and what is left is removed by the next release."""
    if not directory.exists():
        return
    with (
        contextlib.suppress(OSError, subprocess.SubprocessError),
        _locked(mirror_dir(repository, cache or cache_dir())) as mirror,
    ):
        _git("worktree", "remove", "--force", str(directory), cwd=mirror)
        # And worktrees whose directory went otherwise (a worker killed mid-run, or this
        # removal failing): they pin nothing any more.
        _git("worktree", "prune", cwd=mirror)
        _git(*_MAINTENANCE, "maintenance", "run", "--auto", "--quiet", cwd=mirror)


def _signature_problem(sha: str, signers: Path, directory: Path) -> str | None:
    """Why git does not verify ``sha``'s SSH signature against ``signers``; None if it does."""
    if not signers.is_file():
        return f"{signers.name} is not in the commit"
    done = _git(
        "-c", "gpg.format=ssh", "-c", f"gpg.ssh.allowedSignersFile={signers}",
        "verify-commit", sha, cwd=directory,
    )  # fmt: skip
    if done.returncode == 0:
        return None
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    return lines[-1] if lines else "no signature"


def _configs(cfg_dir: Path, environment: str) -> dict[str, c.EnvironmentConfig]:
    """Every app's configuration of ``environment``, parsed by this worker's own code."""
    path = c.environment_file(cfg_dir, environment)
    return {app: load_environment(path, app) for app in app_names(cfg_dir, environment)}


def _serving_commits(configs: Mapping[str, c.EnvironmentConfig]) -> dict[str, str | None]:
    """Per app, the commit its history says serves (``h.last_good_commit``), read with the
    worker's credentials."""
    if not configs:
        return {}
    kube = _kube()
    found = {
        app: kube.get_or_none(k.configmaps(cfg.namespace, history_name(cfg.app)))
        for app, cfg in configs.items()
    }
    return {
        app: h.last_good_commit(h.decode((cm or {}).get("data", {}).get(h.HISTORY_KEY)))
        for app, cm in found.items()
    }


_kube_lock = threading.Lock()
_kube_made: dict[tuple[tuple[str, int, int, int], ...], k.Kube] = {}


def _kube() -> k.Kube:
    """The worker's Kubernetes client, kept between runs (its connection stays open: no new
    client and TLS handshake per run), made again when its kubeconfig file changes (a renewed
    token). No outage is waited out: a run whose checks cannot be made is refused."""
    files = (os.environ.get("KUBECONFIG") or os.path.expanduser("~/.kube/config")).split(os.pathsep)
    key = tuple(
        (file, st.st_ino, st.st_mtime_ns, st.st_size)
        for file in files
        if (st := _stat(file)) is not None
    )
    with _kube_lock:
        if key not in _kube_made:
            # The old client is dropped, not closed: a run may be reading with it.
            _kube_made.clear()
            _kube_made[key] = k.Kube(outage_tolerance=0)
        return _kube_made[key]


def _stat(file: str) -> os.stat_result | None:
    try:
        return os.stat(file)
    except OSError:
        return None
