"""Promotion evidence (bascule.evidence): what a source environment's worker signs for a
release it verified, which runner a signing environment may use, and how a target maps each
record of a digest to accepted or refused: pure decisions with a fake verifier, then real
ssh-keygen signatures (keys made for the test)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from bascule import evidence as ev
from bascule.config_files import load_environment, load_templates
from bascule.errors import Refused, UsageError
from bascule.history import Release
from bascule.promotion import check
from bascule.signoff import Request, Signer, Unverified
from bascule.sshsig import sign, verify
from bascule.tasks.context import Env
from bascule.tasks.promotion import evidence_key
from tests.support.envs import copy_deployments
from tests.support.fakekube import fake_kube
from tests.support.signers import allowed_signers, keypair

DIGEST = "sha256:" + "a1" * 32
OTHER = "sha256:" + "c3" * 32
RELEASE = Release(
    id="r20261207020000-abc123",
    image="registry.example/shop:v1",
    color="blue",
    previous_image=None,
    previous_color=None,
    started="2026-12-07T02:00:00Z",
    phase="done",
    result="succeeded",
    finished="2026-12-07T02:03:00Z",
    commit="0123abcd",
    digest=DIGEST,
    evidence="SIGNED",  # what the fake verifier takes as the good signature
)
IMAGE = f"registry.example/shop@{DIGEST}"


def test_the_message_binds_every_field_in_one_unambiguous_line() -> None:
    evidence = ev.of(RELEASE, "staging", "shop")
    assert evidence == ev.Evidence(
        environment="staging",
        app="shop",
        release=RELEASE.id,
        repository="registry.example/shop",  # no tag, no digest: those are bound apart
        digest=DIGEST,
        commit="0123abcd",
        at=RELEASE.finished,
    )
    text = evidence.message()
    prefix, _, body = text.partition(" ")
    assert prefix == ev.NAMESPACE and "\n" not in text
    assert json.loads(body)["digest"] == DIGEST
    # A commit string cannot pass for another field: it stays inside its JSON value.
    tricky = ev.of(replace(RELEASE, commit='x","digest":"' + OTHER), "staging", "shop")
    assert tricky is not None and json.loads(tricky.message().split(" ", 1)[1])["digest"] == DIGEST


@pytest.mark.parametrize(
    "change",
    [{"result": "failed"}, {"result": "in-progress"}, {"digest": None}, {"finished": None}],
)
def test_only_a_succeeded_release_with_a_digest_is_evidence(change: dict[str, object]) -> None:
    assert ev.of(replace(RELEASE, **change), "staging", "shop") is None  # type: ignore[arg-type]


def test_a_signing_environment_may_not_migrate_in_its_own_process() -> None:
    problem = ev.runner_problem("staging", "process")
    assert problem is not None
    assert "set `migrations.runner: job`" in problem and ev.KEY_VARIABLE in problem
    assert ev.runner_problem("staging", "job") is None
    assert ev.runner_problem("staging", None) is None  # no migrations: no app code runs here


def test_the_worker_key_setting_is_read_and_refused_beside_the_process_runner(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    staging = load_environment(copy_deployments(tmp_path / "cfg") / "staging.yaml")
    assert staging.migrations is not None and staging.migrations.runner == "job"
    env = Env(staging, load_templates(staging.manifests), fake_kube(tmp_path)[0])
    monkeypatch.delenv(ev.KEY_VARIABLE, raising=False)
    assert evidence_key(env) is None
    monkeypatch.setenv(ev.KEY_VARIABLE, str(tmp_path / "key"))
    assert evidence_key(env) == tmp_path / "key"
    env.cfg = staging.model_copy(
        update={"migrations": staging.migrations.model_copy(update={"runner": "process"})}
    )
    with pytest.raises(UsageError, match=r"migrations\.runner: job") as info:
        evidence_key(env)
    assert info.value.exit == 2


# --- the target's decision, with a fake verifier -------------------------------------------------


def fake_verify(evidence: ev.Evidence, signature: str) -> Signer | Unverified:
    """Good only for RELEASE's own evidence with its own signature."""
    if signature == "SIGNED" and evidence == ev.of(RELEASE, "staging", "shop"):
        return Signer("staging", "SHA256:staging")
    return Unverified("the signature is not over this record")


def signed(candidate: Release, image: str = IMAGE) -> str | None:
    return ev.problem(candidate, image, "staging", "shop", fake_verify)


@pytest.mark.parametrize(
    ("record", "image", "why"),
    [
        (RELEASE, IMAGE, None),
        (replace(RELEASE, evidence=None), IMAGE, "carries no evidence signature"),
        # Another digest given this record's signature, or another time or commit.
        (replace(RELEASE, digest=OTHER), f"registry.example/shop@{OTHER}", "not over this"),
        (replace(RELEASE, finished="2026-12-07T03:00:00Z"), IMAGE, "not over this record"),
        (replace(RELEASE, commit="feedbeef"), IMAGE, "not over this record"),
        # The repository asked for is not the one that ran; or the record was edited to it.
        (RELEASE, f"mirror.example/shop@{DIGEST}", "ran repository registry.example/shop, not"),
        (
            replace(RELEASE, image="mirror.example/shop:v1"),
            f"mirror.example/shop@{DIGEST}",
            "not over this record",
        ),
        (replace(RELEASE, image="Not An Image"), IMAGE, "records no valid image reference"),
    ],
)
def test_each_record_maps_to_accepted_or_why_not(
    record: Release, image: str, why: str | None
) -> None:
    problem = signed(record, image)
    assert problem is None if why is None else why in str(problem), problem


def test_the_target_takes_the_newest_record_that_verifies_or_refuses_naming_the_rule() -> None:
    forged = replace(RELEASE, id="r-forged", evidence="SIGNED", commit="evil")
    history = [RELEASE, forged]
    assert check(IMAGE, "staging", "production", history, signed) == RELEASE
    with pytest.raises(Refused) as info:
        check(IMAGE, "staging", "production", [forged], signed)
    text = str(info.value)
    assert text.startswith("promotion evidence: production takes a digest only with staging's")
    assert "release r-forged (registry.example/shop:v1) the signature is not over" in text
    assert "`bascule promote staging production`" in text and "\n" not in text
    assert info.value.exit == 2
    # However many records a writer adds, the refusal stays one readable line.
    many = [replace(forged, id=f"r-{i}") for i in range(50)]
    with pytest.raises(Refused, match="; and 47 more — deploy it to staging again"):
        check(IMAGE, "staging", "production", many, signed)
    # Without evidence signers, the history is trusted as written (unprotected targets).
    assert check(IMAGE, "staging", "qa", [forged]) == forged


# --- real signatures ----------------------------------------------------------------------------


def test_a_real_signature_verifies_only_as_the_source_and_only_for_its_record(
    tmp_path: Path,
) -> None:
    staging_key, approver = keypair(tmp_path, "staging"), keypair(tmp_path, "ann")
    keys = tmp_path / "evidence_signers"
    keys.write_text(
        f'staging namespaces="{ev.NAMESPACE}" {staging_key.with_suffix(".pub").read_text()}'
    )
    evidence = ev.of(RELEASE, "staging", "shop")
    assert evidence is not None
    signature = sign(evidence, staging_key, given_by=ev.KEY_VARIABLE)
    good = verify(evidence, signature, keys, principal="staging")
    assert isinstance(good, Signer) and good.principal == "staging"
    # Listed for staging only: no other environment's evidence is taken from this key.
    dev = verify(ev.of(RELEASE, "dev", "shop"), signature, keys, principal="dev")  # type: ignore[arg-type]
    assert isinstance(dev, Unverified) and "for staging, not for dev" in dev.reason
    moved = ev.of(replace(RELEASE, digest=OTHER), "staging", "shop")
    assert moved is not None
    assert "not over this record" in str(verify(moved, signature, keys, principal="staging"))
    # Another key, or this key signing in the approvals' namespace, is no evidence.
    other = verify(evidence, sign(evidence, approver), keys, principal="staging")
    assert isinstance(other, Unverified) and "not in evidence_signers" in other.reason
    request = Request("run", "staging", "shop", RELEASE.image, RELEASE.id)
    listed = allowed_signers(tmp_path / "approvers", {"staging": staging_key})
    approval = sign(request, staging_key)
    assert isinstance(verify(request, approval, listed), Signer)
    assert isinstance(verify(evidence, approval, keys, principal="staging"), Unverified)
    with pytest.raises(UsageError, match=f"give your SSH private key with {ev.KEY_VARIABLE}"):
        sign(evidence, tmp_path / "missing", given_by=ev.KEY_VARIABLE)
