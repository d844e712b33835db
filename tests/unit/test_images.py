"""The one image-reference parser (bascule.images), as config, CLI, trigger and flow use it."""

from __future__ import annotations

from typing import Any

import pytest

from bascule.errors import UsageError
from bascule.images import ImageError, parse_image, pinned_to, pods_digest, running_digest

DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    ("ref", "domain", "path", "tag", "digest"),
    [
        ("app", None, "app", None, None),
        ("app:1.2.3", None, "app", "1.2.3", None),
        ("team/app", None, "team/app", None, None),
        ("registry.example/team/app:v1", "registry.example", "team/app", "v1", None),
        ("localhost:5000/app:latest", "localhost:5000", "app", "latest", None),
        ("localhost/app", "localhost", "app", None, None),
        ("[::1]:5000/app", "[::1]:5000", "app", None, None),
        ("ghcr.io/org/my_app--x.y:tag_1", "ghcr.io", "org/my_app--x.y", "tag_1", None),
        (f"registry.example/app@{DIGEST}", "registry.example", "app", None, DIGEST),
        (f"registry.example/app:1.2@{DIGEST}", "registry.example", "app", "1.2", DIGEST),
        ("Registry.Example/app", "Registry.Example", "app", None, None),
    ],
)
def test_valid_image_references(
    ref: str, domain: str | None, path: str, tag: str | None, digest: str | None
) -> None:
    image = parse_image(ref, pinned=False)
    assert (image.domain, image.path, image.tag, image.digest) == (domain, path, tag, digest)
    assert str(image) == ref


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("", "empty"),
        ("app 1", "whitespace"),
        ("app\n", "whitespace"),
        ("registry.example/App:1", "repository names are lowercase"),
        ("app:-x", "tag '-x' is not valid"),
        ("app:" + "x" * 129, "is not valid"),
        ("app@sha256:abc", "digest 'sha256:abc' is not valid"),
        ("app@sha256:" + "AB" * 32, "is not valid"),
        ("app@md5:" + "ab" * 16, "is not valid"),
        ("-app", "repository '-app' is not valid"),
        ("registry.example//app", "is not valid"),
        ("registry.example/app/", "is not valid"),
        ("reg_istry.example/app", "registry 'reg_istry.example' is not a valid host"),
        ("registry.example:port/app", "registry 'registry.example:port'"),
        ("a/" * 130 + "b", "over 255 characters"),
        ("app;rm -rf /", "whitespace"),
        ("app$(id)", "is not valid"),
    ],
)
def test_invalid_image_references_say_what_is_wrong(ref: str, message: str) -> None:
    with pytest.raises(ImageError, match=message.replace("(", r"\(").replace("$", r"\$")):
        parse_image(ref, pinned=False)


def test_digest_required_when_asked() -> None:
    with pytest.raises(ImageError, match=r"has no digest.*image@sha256:<64 hex digits>"):
        parse_image("registry.example/app:1.2", require_digest=True)
    assert parse_image(f"registry.example/app@{DIGEST}", require_digest=True).digest == DIGEST


@pytest.mark.parametrize(
    ("ref", "part"),
    [
        (f"app@{DIGEST}$(id)", "digest"),
        (f"app@{DIGEST}a", "digest"),
        ("app:v1$(id)", "tag"),
        ("registry.example$(id)/app:v1", "registry"),
        ("app$(id):v1", "repository"),
    ],
)
def test_a_valid_part_followed_by_more_is_refused(ref: str, part: str) -> None:
    # Each part must match whole: a valid prefix followed by a shell substitution would
    # reach a Deployment, and with a digest it would pass as immutable.
    for require_digest in (False, True):
        with pytest.raises(ImageError, match=f"{part} .* not (a )?valid"):
            parse_image(ref, pinned=False, require_digest=require_digest and part == "digest")


@pytest.mark.parametrize(
    "ref",
    ["app:v1\n", "app:v1 ", "\tapp:v1", "app:v1\x00", "app:v1@sha256:" + "a" * 64 + "\n"],
)
def test_nothing_may_follow_a_valid_reference(ref: str) -> None:
    # A trailing newline once passed a ``match(^...$)`` parser and reached the Deployment.
    with pytest.raises(ImageError, match="whitespace or control characters"):
        parse_image(ref)


def test_release_images_are_pinned() -> None:
    assert parse_image("app", pinned=False).tag is None
    assert parse_image("app:latest", pinned=False).tag == "latest"
    for ref in ("app", "team/app", "app:latest", "registry.example/app:latest"):
        with pytest.raises(ImageError, match="pin"):
            parse_image(ref)
    assert parse_image(f"app@{DIGEST}").digest == DIGEST


def test_image_errors_are_usage_errors() -> None:
    # The CLI maps UsageError to exit 2; pydantic validators need a ValueError.
    assert issubclass(ImageError, UsageError)
    assert issubclass(ImageError, ValueError)


@pytest.mark.parametrize(
    ("image_id", "digest"),
    [
        # containerd and CRI-O: the repository digest the image was pulled (or imported) by.
        (f"bascule.local/sample-app@{DIGEST}", DIGEST),
        (f"docker.io/library/nginx@{DIGEST}", DIGEST),
        # dockershim's form.
        (f"docker-pullable://registry.example/app@{DIGEST}", DIGEST),
        # The runtime's local image id (the config's digest): no registry serves it.
        (DIGEST, None),
        (f"docker://{DIGEST}", None),
        ("", None),  # a container not started yet
        ("registry.example/app@sha256:short", None),
        ("registry.example/app:v1", None),
    ],
)
def test_running_digest_from_image_id(image_id: str, digest: str | None) -> None:
    assert running_digest(image_id) == digest


def pod(image_id: str, name: str = "app", sidecar: str = "") -> dict[str, Any]:
    containers = [{"name": name}, {"name": "sidecar"}]
    statuses = [{"name": "sidecar", "imageID": sidecar}, {"name": name, "imageID": image_id}]
    return {"spec": {"containers": containers}, "status": {"containerStatuses": statuses}}


def test_pods_digest_is_the_one_digest_of_the_first_container() -> None:
    other = "sha256:" + "cd" * 32
    ran = f"registry.example/app@{DIGEST}"
    sidecar = f"registry.example/proxy@{other}"
    assert pods_digest([pod(ran, sidecar=sidecar), pod(ran, name="web")]) == DIGEST
    assert pods_digest([pod(ran), pod(f"registry.example/app@{other}")]) is None  # disagree
    assert pods_digest([pod(ran), pod(DIGEST)]) is None  # one runs what no registry serves
    assert pods_digest([pod(ran), pod("")]) == DIGEST  # one not started yet
    assert pods_digest([{"spec": {"containers": [{"name": "app"}]}, "status": {}}]) is None
    assert pods_digest([pod(ran), {"spec": {"containers": [{"name": "app"}]}}]) == DIGEST  # pending
    assert pods_digest([]) is None


def test_pinned_to_keeps_repository_and_tag() -> None:
    # Any tag, or none: the digest pins it.
    assert pinned_to("registry.example/app", DIGEST) == f"registry.example/app@{DIGEST}"
    assert pinned_to("app:latest", DIGEST) == f"app:latest@{DIGEST}"
    other = "sha256:" + "cd" * 32
    assert pinned_to("registry.example/app:v1", DIGEST) == f"registry.example/app:v1@{DIGEST}"
    assert pinned_to(f"registry.example/app@{other}", DIGEST) == f"registry.example/app@{DIGEST}"
    assert pinned_to(f"localhost:5000/app:v2@{other}", DIGEST) == f"localhost:5000/app:v2@{DIGEST}"


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("", "the image reference is empty — write e.g. registry.example/app:v1.2"),
        (
            "app@sha256:abc",
            "image reference 'app@sha256:abc': digest 'sha256:abc' is not valid — "
            "expected sha256: followed by 64 lowercase hex digits",
        ),
        (
            "app:-x",
            "image reference 'app:-x': tag '-x' is not valid — a tag is up to 128 letters, "
            "digits, '_', '.' and '-', not starting with '.' or '-'",
        ),
        (
            "-app",
            "image reference '-app': repository '-app' is not valid — "
            "expected lowercase words separated by '/', '.', '_' or '-'",
        ),
        (
            "team/App",
            "image reference 'team/App': repository 'team/App' is not valid (repository names "
            "are lowercase) — expected lowercase words separated by '/', '.', '_' or '-'",
        ),
        # The tag is after the last '/': a ':' before it is part of the repository.
        (
            "registry.example/team:x/app",
            "image reference 'registry.example/team:x/app': repository 'team:x/app' is not "
            "valid — expected lowercase words separated by '/', '.', '_' or '-'",
        ),
    ],
)
def test_each_refusal_says_what_to_write(ref: str, message: str) -> None:
    with pytest.raises(ImageError) as info:
        parse_image(ref, pinned=False)
    assert str(info.value) == message


def test_the_refusals_of_an_unpinned_or_undigested_image() -> None:
    with pytest.raises(ImageError) as info:
        parse_image("app")
    assert str(info.value) == (
        "image 'app' has no tag or digest — pin one (e.g. app:v1 or @sha256:…) so that a "
        "release, and a rollback to it, means exactly one image"
    )
    with pytest.raises(ImageError) as info:
        parse_image("app:v1", require_digest=True)
    assert str(info.value) == (
        "image reference 'app:v1' has no digest; this environment deploys by digest only — "
        "give the reference that passed staging, as image@sha256:<64 hex digits>"
    )


def test_a_name_of_exactly_the_longest_length_is_accepted() -> None:
    name = "a/" * 126 + "abc"  # 255 characters
    assert len(name) == 255 and parse_image(name, pinned=False).path == name
