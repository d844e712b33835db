"""An environment's Prefect deployments, made from the shipped prefect.yaml's
(bascule/registration.py): its name wherever the model's stands, and nowhere else."""

from __future__ import annotations

import pytest

from bascule.cli.register import shipped_spec
from bascule.registration import (
    RegistrationError,
    deployments_for,
    models,
    pools,
    registration,
)

SPEC = shipped_spec()


def test_the_shipped_models_are_the_example_environments() -> None:
    assert models(SPEC) == ["dev", "staging", "production"]


def test_a_new_environment_is_made_like_dev_by_default() -> None:
    made = deployments_for(SPEC, "qa")
    assert [(d["entrypoint"], d["name"]) for d in made] == [
        ("bascule.flows.deploy:deploy", "qa"),
        ("bascule.flows.rollback:rollback", "qa"),
        ("bascule.flows.recover:recover", "qa"),
    ]
    text = repr(made)
    assert "'dev'" not in text and "bascule-dev" not in text and "prefect.tag.dev" not in text
    assert {d["work_pool"]["name"] for d in made} == {"bascule-qa"}
    assert all(d["parameters"] == {"environment": "qa"} for d in made)
    triggers = [t for d in made for t in d.get("triggers", [])]
    assert [t["match_related"][1] for t in triggers] == [
        {"prefect.resource.id": "prefect.tag.qa"}
    ] * 2


def test_only_whole_words_are_renamed() -> None:
    spec = {
        "deployments": [
            {
                "name": "dev-kubernetes",
                "description": "devout developers deploy to dev",
                "parameters": {"environment": "dev"},
                "work_pool": {"name": "bascule-dev-kubernetes"},
                "tags": ["dev", "kubernetes"],
            }
        ]
    }
    (made,) = deployments_for(spec, "qa", kubernetes=True)
    assert made["description"] == "devout developers deploy to qa"
    assert (made["name"], made["work_pool"]["name"]) == ("qa-kubernetes", "bascule-qa-kubernetes")
    assert deployments_for(spec, "qa") == []  # the Kubernetes pools' only when asked


def test_like_picks_the_model_and_a_shipped_name_keeps_its_own() -> None:
    uat = deployments_for(SPEC, "uat", like="staging")
    assert [d["entrypoint"].rsplit(":", 1)[1] for d in uat] == [
        "deploy", "redeploy", "rollback", "recover",
    ]  # fmt: skip
    staging = deployments_for(SPEC, "staging")
    assert [d["name"] for d in staging] == ["staging"] * 4
    with pytest.raises(RegistrationError, match=r"--like prod: prefect\.yaml has no deployments"):
        deployments_for(SPEC, "uat", like="prod")


def test_a_registration_holds_only_the_asked_environments() -> None:
    spec = registration(SPEC, ["qa", "production"])
    assert "definitions" not in spec and spec["pull"] == []
    assert pools(spec) == ["bascule-qa", "bascule-production"]
    assert {d["parameters"]["environment"] for d in spec["deployments"]} == {"qa", "production"}
