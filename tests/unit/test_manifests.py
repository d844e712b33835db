"""Rendering the blue-green objects: names, selectors, labels, probes and the drain settings."""

from __future__ import annotations

import base64
import copy
import re
from pathlib import Path
from typing import Any

import pytest

from bascule.config import ConfigError, EnvironmentConfig
from bascule.config_files import load_environment, load_templates
from bascule.manifests import (
    ANNOTATION_IMAGE,
    ANNOTATION_RELEASE,
    LABEL_COLOR,
    LABEL_ENVIRONMENT,
    LABEL_INSTANCE,
    LABEL_MANAGED_BY,
    LABEL_NAME,
    LABEL_RELEASE,
    LABEL_VERSION,
    RESTRICTED_CONTAINER,
    Role,
    Templates,
    color_of_selector,
    deployment_name,
    idle_color,
    instance_label,
    label_value,
    object_labels,
    parse_templates,
    release_secret,
    render_deployment,
    render_secret,
    render_service,
    restored_service,
    secret_refs,
    selector,
    selector_patch,
    service_name,
    service_proxy_path,
    stale_secrets,
    validate_release_id,
    version_label,
)
from bascule.vocabulary import COLORS

DEPLOYMENTS = Path(__file__).resolve().parents[2] / "deployments"
IMAGE = "bascule.local/sample-app:v2"
DIGEST = "sha256:" + "0123456789abcdef" * 4
# Kubernetes' own rule for a label value (apimachinery's IsValidLabelValue).
VALID_LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")
RECOMMENDED = {
    LABEL_NAME: "sample-app",
    LABEL_INSTANCE: "sample-app-staging",
    LABEL_VERSION: "v2",
    LABEL_MANAGED_BY: "bascule",
}


@pytest.fixture(scope="module")
def cfg() -> EnvironmentConfig:
    return load_environment(DEPLOYMENTS / "staging.yaml")


@pytest.fixture(scope="module")
def templates(cfg: EnvironmentConfig) -> Templates:
    return load_templates(cfg.manifests)


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = deployment["spec"]["template"]["spec"]["containers"][0]
    return result


def test_names_and_colors() -> None:
    assert idle_color(None) == "blue"
    assert idle_color("blue") == "green"
    assert idle_color("green") == "blue"
    assert deployment_name("shop", "green") == "shop-green"
    assert service_name("shop", "active") == "shop"
    assert service_name("shop", "preview") == "shop-preview"


def test_selector_round_trip() -> None:
    assert selector("shop", "blue") == {LABEL_NAME: "shop", LABEL_COLOR: "blue"}
    assert color_of_selector("shop", selector("shop", "green")) == "green"
    assert color_of_selector("shop", selector("other", "green")) is None
    assert color_of_selector("shop", {LABEL_NAME: "shop", LABEL_COLOR: "red"}) is None
    assert color_of_selector("shop", None) is None


def test_selector_patch_is_guarded_by_resource_version() -> None:
    patch = selector_patch("shop", "green", "4711")
    assert patch == {
        "metadata": {"resourceVersion": "4711"},
        "spec": {"selector": {LABEL_NAME: "shop", LABEL_COLOR: "green"}},
    }
    # The Service's version follows the color it selects.
    labels = object_labels("shop", "prod", "r.example/shop:1.4.2")
    labelled = selector_patch("shop", "green", "4711", labels)
    assert labelled["metadata"] == {"resourceVersion": "4711", "labels": labels}
    assert labels[LABEL_VERSION] == "1.4.2"


@pytest.mark.parametrize(
    ("image", "version"),
    [
        ("bascule.local/sample-app:v2", "v2"),
        ("r.example:5000/team/shop:1.4.2-rc.1", "1.4.2-rc.1"),
        (f"r.example/shop:v3@{DIGEST}", "v3"),  # people read tags: the tag wins
        (f"r.example/shop@{DIGEST}", "sha256-0123456789ab"),
        (f"r.example/shop@sha512:{'ab' * 64}", "sha512-abababababab"),
        ("r.example/shop", None),  # neither: no version rather than a made-up one
        ("not an image", None),
    ],
)
def test_the_version_label_is_the_tag_or_the_short_digest(image: str, version: str) -> None:
    assert version_label(image) == version


@pytest.mark.parametrize(
    "tag",
    [
        "_build",  # a tag may start with '_', a label value may not
        "v1.2.",  # ... or end with '.'
        "1.0-",
        "x" * 128,  # the longest tag, twice a label's length
        "a" * 62 + "-b" + "c" * 64,
        "__.--__",
    ],
)
def test_any_tag_gives_a_valid_label_value(tag: str) -> None:
    version = version_label(f"r.example/shop:{tag}")
    assert version is not None
    assert len(version) <= 63 and VALID_LABEL_VALUE.fullmatch(version), version


def test_label_values_made_from_other_text_keep_texts_apart() -> None:
    assert label_value("v1.2.3") == "v1.2.3"  # a valid value is itself
    assert label_value("a" * 63) == "a" * 63
    long_a, long_b = label_value("x" * 70 + "a"), label_value("x" * 70 + "b")
    assert long_a != long_b
    assert long_a.startswith("x" * 52 + "-") and len(long_a) == 63
    assert label_value("_v1") != label_value("v1") and label_value("v1_") != label_value("v1")
    assert label_value("a/b c") == label_value("a/b c")  # a pure function of the text
    assert VALID_LABEL_VALUE.fullmatch(label_value("@@@"))


def test_the_instance_is_the_app_in_its_environment() -> None:
    assert instance_label("shop", "production") == "shop-production"
    long_app = "a" * 63
    assert instance_label(long_app, "production") != instance_label(long_app, "staging")
    assert len(instance_label(long_app, "staging")) == 63
    assert object_labels("shop", "dev") == {
        LABEL_NAME: "shop",
        LABEL_INSTANCE: "shop-dev",
        LABEL_MANAGED_BY: "bascule",
        LABEL_ENVIRONMENT: "dev",
    }
    assert object_labels("shop", "dev", "r/shop:v9")[LABEL_VERSION] == "v9"


def test_deployment(cfg: EnvironmentConfig, templates: Templates) -> None:
    before = copy.deepcopy(templates)
    obj = render_deployment(cfg, templates, color="green", image=IMAGE, release_id="r-42")
    assert templates == before, "rendering must not change the templates"
    meta = obj["metadata"]
    assert (obj["apiVersion"], obj["kind"]) == ("apps/v1", "Deployment")
    assert (meta["name"], meta["namespace"]) == ("sample-app-green", "bascule-staging")
    assert meta["labels"][LABEL_NAME] == "sample-app"
    assert meta["labels"][LABEL_COLOR] == "green"
    assert meta["annotations"] == {ANNOTATION_RELEASE: "r-42", ANNOTATION_IMAGE: IMAGE}

    spec = obj["spec"]
    assert spec["replicas"] == cfg.replicas == 2
    assert spec["selector"] == {"matchLabels": selector("sample-app", "green")}
    assert spec["progressDeadlineSeconds"] == cfg.rollout.progress_deadline_seconds
    pod_labels = spec["template"]["metadata"]["labels"]
    assert pod_labels == {
        **RECOMMENDED,
        LABEL_ENVIRONMENT: "staging",
        LABEL_COLOR: "green",
        LABEL_RELEASE: "r-42",
    }
    assert RECOMMENDED.items() <= meta["labels"].items()
    # The Deployment's selector must select its own pods, and only by name and color: it
    # is immutable, so no release's labels (version) may ever enter it.
    assert spec["selector"] == {"matchLabels": {LABEL_NAME: "sample-app", LABEL_COLOR: "green"}}
    assert spec["selector"]["matchLabels"].items() <= pod_labels.items()


def test_deployment_pod_spec_drains_and_probes(
    cfg: EnvironmentConfig, templates: Templates
) -> None:
    obj = render_deployment(cfg, templates, color="blue", image=IMAGE, release_id="r1")
    pod = obj["spec"]["template"]["spec"]
    app = container(obj)
    assert app["image"] == IMAGE
    assert app["imagePullPolicy"] == "Never"
    assert app["ports"][0]["containerPort"] == 8080
    assert app["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert app["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert app["resources"]["requests"]["cpu"] and app["resources"]["requests"]["memory"]
    drain = app["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert 0 < drain < pod["terminationGracePeriodSeconds"]
    assert {"name": "DRAIN_SECONDS", "value": "3"} in app["env"]
    # The sample app's pods are admitted where Pod Security `restricted` is enforced.
    assert app["securityContext"] == dict(RESTRICTED_CONTAINER)


def test_deployment_replicas_and_extras(cfg: EnvironmentConfig, templates: Templates) -> None:
    obj = render_deployment(
        cfg,
        templates,
        color="blue",
        image=IMAGE,
        release_id="r1",
        replicas=0,
        extra_labels={"team": "shop"},
        extra_annotations={"bascule.io/secret-hash": "abc"},
    )
    assert obj["spec"]["replicas"] == 0
    assert obj["metadata"]["labels"]["team"] == "shop"
    assert obj["spec"]["template"]["metadata"]["labels"]["team"] == "shop"
    assert obj["spec"]["template"]["metadata"]["annotations"]["bascule.io/secret-hash"] == "abc"
    with pytest.raises(ValueError, match="Bascule owns"):
        render_deployment(
            cfg,
            templates,
            color="blue",
            image=IMAGE,
            release_id="r1",
            extra_labels={LABEL_COLOR: "x"},
        )


def test_environment_overrides_template_env(cfg: EnvironmentConfig) -> None:
    text = (DEPLOYMENTS / "manifests" / "deployment.yaml").read_text()
    text = text.replace(
        "          env:\n",
        "          env:\n            - {name: DRAIN_SECONDS, value: '9'}\n",
    )
    service = (DEPLOYMENTS / "manifests" / "service.yaml").read_text()
    obj = render_deployment(
        cfg, parse_templates(text, service), color="blue", image=IMAGE, release_id="r1"
    )
    color_from_label = {"fieldRef": {"fieldPath": "metadata.labels['bascule.io/color']"}}
    assert container(obj)["env"] == [
        {"name": "DRAIN_SECONDS", "value": "3"},
        {"name": "APP_COLOR", "valueFrom": color_from_label},
    ]


@pytest.mark.parametrize("release_id", ["", "-a", "a" * 64, "a b", "a/b"])
def test_bad_release_ids(release_id: str) -> None:
    with pytest.raises(ValueError, match="label value"):
        validate_release_id(release_id)


def test_good_release_ids() -> None:
    for release_id in ("r1", "20250101t120000-ab12", "a" * 63, "v1.2_3"):
        assert validate_release_id(release_id) == release_id


@pytest.mark.parametrize(
    ("role", "name"), [("active", "sample-app"), ("preview", "sample-app-preview")]
)
def test_services(cfg: EnvironmentConfig, templates: Templates, role: Role, name: str) -> None:
    obj = render_service(cfg, templates, role=role, color="blue", image=IMAGE)
    assert RECOMMENDED.items() <= obj["metadata"]["labels"].items()
    assert (obj["apiVersion"], obj["kind"]) == ("v1", "Service")
    assert obj["metadata"]["name"] == name
    assert obj["metadata"]["namespace"] == "bascule-staging"
    assert obj["metadata"]["labels"]["bascule.io/role"] == role
    assert obj["spec"]["selector"] == {LABEL_NAME: "sample-app", LABEL_COLOR: "blue"}
    assert obj["spec"]["type"] == "ClusterIP"
    assert obj["spec"]["ports"] == [
        {"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}
    ]


def test_a_stored_service_becomes_either_role_keeping_its_ports(
    cfg: EnvironmentConfig, templates: Templates
) -> None:
    """A Service a release applied (as the active one, on blue, for v1) made the preview
    Service on green for v2: name, role, selector and version move; its ports stay."""
    stored = render_service(cfg, templates, role="active", color="blue", image="x/app:v1")
    stored["spec"]["ports"][0]["targetPort"] = 9090

    obj = restored_service(stored, cfg, role="preview", color="green", image=IMAGE)

    assert obj["metadata"]["name"] == "sample-app-preview"
    assert obj["metadata"]["labels"]["bascule.io/role"] == "preview"
    assert obj["metadata"]["labels"][LABEL_VERSION] == "v2"
    assert obj["spec"]["selector"] == selector("sample-app", "green")
    assert obj["spec"]["ports"][0]["targetPort"] == 9090
    assert stored["spec"]["selector"] == selector("sample-app", "blue")  # not changed


def test_service_selects_the_deployments_pods(cfg: EnvironmentConfig, templates: Templates) -> None:
    for color in COLORS:
        dep = render_deployment(cfg, templates, color=color, image=IMAGE, release_id="r1")
        svc = render_service(cfg, templates, role="preview", color=color)
        pod_labels = dep["spec"]["template"]["metadata"]["labels"]
        assert svc["spec"]["selector"].items() <= pod_labels.items()


def test_service_proxy_path(cfg: EnvironmentConfig, templates: Templates) -> None:
    path = service_proxy_path(cfg, templates, role="preview", path="/readyz")
    service = "/api/v1/namespaces/bascule-staging/services/sample-app-preview:http"
    assert path == f"{service}/proxy/readyz"


def test_template_errors_name_file_and_line() -> None:
    deployment = (
        "apiVersion: apps/v1\nkind: Deployment\n"
        "spec:\n  template:\n    spec:\n      containers: []\n"
    )
    service = "apiVersion: v1\nkind: Service\nspec:\n  type: ClusterIP\n"
    with pytest.raises(ConfigError) as info:
        parse_templates(deployment, service, deployment_file="d.yaml", service_file="s.yaml")
    problems = {(p.file, p.field): p for p in info.value.problems}
    containers = problems["d.yaml", "spec.template.spec.containers"]
    assert containers.mark is not None and containers.mark.line == 6
    assert "container" in containers.message
    assert ("s.yaml", "spec.ports") in problems

    with pytest.raises(ConfigError, match=r"k\.yaml:2:7: kind: must be 'Deployment'"):
        parse_templates("apiVersion: apps/v1\nkind: Pod\n", service, deployment_file="k.yaml")


def test_missing_templates(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_templates(tmp_path)
    assert [Path(f).name for f in info.value.files] == ["deployment.yaml", "service.yaml"]


def _secret_cfg() -> EnvironmentConfig:
    return EnvironmentConfig.model_validate(
        {
            "app": "shop",
            "environment": "dev",
            "namespace": "shop-dev",
            "env": {"PLAIN": "1"},
            "secrets": {"TOKEN": {"env": "SHOP_TOKEN"}, "APP_COLOR": {"env": "X"}},
        }
    )


def test_release_secret_name_is_a_hash_of_the_values() -> None:
    a = release_secret("shop", {"TOKEN": "one", "B": "x"})
    assert a is not None and a.name.startswith("shop-secrets-") and a.keys == ("B", "TOKEN")
    assert a == release_secret("shop", {"B": "x", "TOKEN": "one"})  # order does not matter
    b = release_secret("shop", {"TOKEN": "two", "B": "x"})
    assert b is not None and b.name != a.name
    assert "one" not in a.name and release_secret("shop", {}) is None


def test_deployment_reads_each_secret_from_the_release_secret(tmp_path: Path) -> None:
    cfg = _secret_cfg()
    values = {"TOKEN": "t0ken", "APP_COLOR": "c"}
    secret = release_secret(cfg.app, values)
    templates = load_templates(DEPLOYMENTS / "manifests")
    dep = render_deployment(
        cfg, templates, color="blue", image="r.example/shop:v1", release_id="r1", secret=secret
    )
    env = {e["name"]: e for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert secret is not None
    assert env["TOKEN"]["valueFrom"] == {"secretKeyRef": {"name": secret.name, "key": "TOKEN"}}
    # A secret replaces the template's entry of the same name, in place.
    assert env["APP_COLOR"]["valueFrom"]["secretKeyRef"]["name"] == secret.name
    assert env["PLAIN"] == {"name": "PLAIN", "value": "1"}
    assert "t0ken" not in str(dep)
    assert secret_refs(dep) == {secret.name}

    obj = render_secret(cfg, values)
    assert obj["immutable"] is True and obj["metadata"]["name"] == secret.name
    assert base64.b64decode(obj["data"]["TOKEN"]).decode() == "t0ken"
    assert obj["metadata"]["labels"]["bascule.io/release-secrets"] == "true"
    # Shared by the releases with these values: of no one version.
    assert obj["metadata"]["labels"][LABEL_INSTANCE] == f"{cfg.app}-{cfg.environment}"
    assert LABEL_VERSION not in obj["metadata"]["labels"]
    assert stale_secrets(["a", "b", "c"], {"b"}) == ["a", "c"]
