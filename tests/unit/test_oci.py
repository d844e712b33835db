"""tests/cluster/images/oci.py: layers and OCI layout archives, checked from the bytes up."""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import io
import json
import os
import sys
import tarfile
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

OCI_PY = Path(__file__).resolve().parents[1] / "cluster" / "images" / "oci.py"


def load_oci() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bascule_oci", OCI_PY)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


oci = load_oci()


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def make_tree(root: Path) -> None:
    (root / "app" / "pkg").mkdir(parents=True)
    (root / "app" / "pkg" / "mod.py").write_text("print('hi')\n")
    (root / "bin").mkdir()
    (root / "bin" / "tool").write_bytes(b"#!/bin/sh\necho tool\n")
    (root / "bin" / "tool").chmod(0o755)
    os.link(root / "bin" / "tool", root / "bin" / "tool-hardlink")
    (root / "bin" / "alias").symlink_to("tool")
    (root / "dev").mkdir()
    (root / "dev" / "not-in-layer").write_text("x")


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    make_tree(root)
    return root


def test_layer_digests_match_the_bytes(tree: Path, tmp_path: Path) -> None:
    layer = oci.write_layer(tree, tmp_path / "layer.tar.gz", empty_dirs=["dev"])
    blob = layer.path.read_bytes()
    assert layer.digest == sha(blob)
    assert layer.size == len(blob)
    assert layer.diff_id == sha(gzip.decompress(blob))
    assert json.loads(layer.sidecar().read_text()) == layer.to_json()
    assert blob[4:8] == b"\0\0\0\0"  # gzip header mtime
    assert not blob[3] & 0x08  # no file name stored in the gzip header


def test_layer_entries_are_sorted_and_normalized(tree: Path, tmp_path: Path) -> None:
    layer = oci.write_layer(tree, tmp_path / "layer.tar.gz", empty_dirs=["dev"])
    with tarfile.open(layer.path) as tar:
        members = tar.getmembers()
        names = [m.name for m in members]
        assert names == [
            "app",
            "app/pkg",
            "app/pkg/mod.py",
            "bin",
            "bin/alias",
            "bin/tool",
            "bin/tool-hardlink",
            "dev",
        ]
        by_name = {m.name: m for m in members}
        assert all(m.mtime == 0 and m.uid == 0 and m.gid == 0 for m in members)
        assert all(m.uname == "" and m.gname == "" for m in members)
        assert by_name["bin/tool"].mode & 0o777 == 0o755
        assert by_name["bin/alias"].issym() and by_name["bin/alias"].linkname == "tool"
        assert by_name["bin/tool-hardlink"].islnk()
        assert by_name["bin/tool-hardlink"].linkname == "bin/tool"
        assert by_name["dev"].isdir()
        extracted = tar.extractfile("app/pkg/mod.py")
        assert extracted and extracted.read() == b"print('hi')\n"


def test_layers_are_reproducible(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    make_tree(first)
    make_tree(second)
    os.utime(second / "app" / "pkg" / "mod.py", (1, 123456789))
    a = oci.write_layer(first, tmp_path / "a.tar.gz")
    b = oci.write_layer(second, tmp_path / "b.tar.gz")
    assert (a.digest, a.diff_id) == (b.digest, b.diff_id)


def read_archive(path: Path) -> dict[str, bytes]:
    with tarfile.open(path) as tar:
        out = {}
        for member in tar.getmembers():
            f = tar.extractfile(member)
            if f is not None:
                out[member.name] = f.read()
        return out


def blob(files: dict[str, bytes], digest: str) -> bytes:
    return files["blobs/sha256/" + digest.removeprefix("sha256:")]


@pytest.fixture
def archive(tree: Path, tmp_path: Path) -> tuple[Path, list[Any]]:
    base = oci.write_layer(tree, tmp_path / "base.tar.gz")
    top_root = tmp_path / "top"
    (top_root / "app").mkdir(parents=True)
    (top_root / "app" / "main.py").write_text("x = 1\n")
    top = oci.write_layer(top_root, tmp_path / "top.tar.gz")
    images = [
        oci.ImageSpec(
            name=f"bascule.local/sample-app:{tag}",
            layers=[base, top],
            config={"Env": [f"APP_VERSION={tag}"], "Cmd": ["python3", "-m", "sampleapp.app"]},
            architecture="amd64",
        )
        for tag in ("v1", "v2")
    ]
    out = tmp_path / "out" / "sample-app.oci.tar"
    oci.write_archive(images, out)
    return out, images


def test_archive_layout(archive: tuple[Path, list[Any]]) -> None:
    path, images = archive
    files = read_archive(path)
    assert json.loads(files["oci-layout"]) == {"imageLayoutVersion": "1.0.0"}
    index = json.loads(files["index.json"])
    assert index["schemaVersion"] == 2
    assert index["mediaType"] == "application/vnd.oci.image.index.v1+json"
    for name, data in files.items():
        if name.startswith("blobs/sha256/"):
            assert sha(data) == "sha256:" + name.removeprefix("blobs/sha256/"), name
    # The shared layers are stored once: 2 layers + 2 configs + 2 manifests.
    assert len([n for n in files if n.startswith("blobs/sha256/")]) == 6

    names = []
    for desc, image in zip(index["manifests"], images, strict=True):
        assert desc["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
        assert desc["platform"] == {"architecture": "amd64", "os": "linux"}
        names.append(desc["annotations"]["io.containerd.image.name"])
        assert desc["annotations"]["org.opencontainers.image.ref.name"] == image.tag
        raw_manifest = blob(files, desc["digest"])
        assert desc["size"] == len(raw_manifest)
        manifest = json.loads(raw_manifest)
        assert manifest["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
        assert manifest["config"]["mediaType"] == "application/vnd.oci.image.config.v1+json"
        config = json.loads(blob(files, manifest["config"]["digest"]))
        assert (config["architecture"], config["os"]) == ("amd64", "linux")
        assert config["config"]["Env"] == [f"APP_VERSION={image.tag}"]
        layers = manifest["layers"]
        assert [lay["mediaType"] for lay in layers] == [
            "application/vnd.oci.image.layer.v1.tar+gzip"
        ] * 2
        diff_ids = [sha(gzip.decompress(blob(files, lay["digest"]))) for lay in layers]
        assert config["rootfs"] == {"type": "layers", "diff_ids": diff_ids}
        assert [lay["size"] for lay in layers] == [
            len(blob(files, lay["digest"])) for lay in layers
        ]
    assert names == ["bascule.local/sample-app:v1", "bascule.local/sample-app:v2"]
    assert oci.verify_archive(path) == []


def test_archive_is_reproducible(archive: tuple[Path, list[Any]], tmp_path: Path) -> None:
    path, images = archive
    again = tmp_path / "again.oci.tar"
    oci.write_archive(images, again)
    assert path.read_bytes() == again.read_bytes()


def test_verify_finds_a_tampered_layer_and_a_wrong_diff_id(
    archive: tuple[Path, list[Any]], tmp_path: Path
) -> None:
    path, _ = archive
    files = read_archive(path)
    index = json.loads(files["index.json"])
    manifest = json.loads(blob(files, index["manifests"][0]["digest"]))
    layer_name = "blobs/sha256/" + manifest["layers"][1]["digest"].removeprefix("sha256:")
    tampered = dict(files)
    tampered[layer_name] = gzip.compress(b"not the layer", mtime=0)
    bad = tmp_path / "bad.oci.tar"
    with tarfile.open(bad, "w") as tar:
        for name, data in tampered.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    problems = oci.verify_archive(bad)
    assert any("does not match its digest" in p for p in problems)
    assert any("diff_id" in p for p in problems)


def test_layer_load_trusts_the_sidecar_only_while_it_matches(tree: Path, tmp_path: Path) -> None:
    layer = oci.write_layer(tree, tmp_path / "layer.tar.gz")
    assert oci.Layer.load(layer.path) == layer
    layer.sidecar().write_text(json.dumps({**layer.to_json(), "digest": "sha256:stale"}))
    assert oci.Layer.load(layer.path).diff_id == layer.diff_id


def test_cli_layer_archive_verify(tree: Path, tmp_path: Path) -> None:
    assert oci.main(["layer", str(tree), str(tmp_path / "l.tar.gz"), "--empty-dir", "dev"]) == 0
    spec = tmp_path / "spec.json"
    spec.write_text(
        json.dumps(
            {
                "images": [
                    {
                        "name": "bascule.local/pause:3.10",
                        "layers": ["l.tar.gz"],
                        "config": {"Entrypoint": ["/pause"]},
                    }
                ]
            }
        )
    )
    out = tmp_path / "pause.oci.tar"
    assert oci.main(["archive", str(spec), str(out)]) == 0
    assert oci.main(["verify", str(out)]) == 0
    index = json.loads(read_archive(out)["index.json"])
    assert index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"] == "3.10"
