"""Builds OCI image archives that `ctr images import` loads, with the standard library only.

There is no registry and no image builder on our machines, so images are assembled here:
`layer` turns a directory into a gzip layer, `archive` writes an OCI image layout (oci-layout,
index.json, blobs/sha256/...) as one tar holding one or more tagged images, and `verify` checks
an archive. Everything is deterministic (sorted entries, mtime 0, owner 0:0, gzip without name
or timestamp, canonical JSON) so the same inputs always give the same digests.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import platform
import stat
import sys
import tarfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

MEDIA_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
# containerd names imported images after this annotation; ref.name is the OCI spec's tag.
ANNOTATION_IMAGE_NAME = "io.containerd.image.name"
ANNOTATION_REF_NAME = "org.opencontainers.image.ref.name"
EPOCH = "1970-01-01T00:00:00Z"
_CHUNK = 1 << 20
_GOARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def canonical_json(value: Any) -> bytes:
    """JSON with sorted keys and no spaces, so a config or manifest has one digest."""
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def host_architecture() -> str:
    machine = platform.machine().lower()
    try:
        return _GOARCH[machine]
    except KeyError:
        raise SystemExit(
            f"oci.py: unknown machine {machine!r}; pass architecture in the spec"
        ) from None


class _HashingWriter(io.RawIOBase):
    """Write-through file object that hashes and counts what passes, for digests in one pass."""

    def __init__(self, target: IO[bytes]) -> None:
        super().__init__()
        self._target = target
        self.hash = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        self._target.write(view)
        self.hash.update(view)
        self.size += len(view)
        return len(view)

    def digest(self) -> str:
        return "sha256:" + self.hash.hexdigest()


@dataclass(frozen=True)
class Layer:
    """A compressed layer blob and the two digests an image needs for it."""

    path: Path
    digest: str  # of the gzip blob: what the manifest and the blob store name
    diff_id: str  # of the uncompressed tar: what the config's rootfs lists
    size: int

    def sidecar(self) -> Path:
        return self.path.with_name(self.path.name + ".json")

    def to_json(self) -> dict[str, Any]:
        return {"digest": self.digest, "diff_id": self.diff_id, "size": self.size}

    @classmethod
    def load(cls, path: Path) -> Layer:
        """Reads a layer's digests; the sidecar's diff_id is used only if the blob matches it."""
        digest, size = _file_digest(path)
        side = path.with_name(path.name + ".json")
        if side.exists():
            meta = json.loads(side.read_text())
            if meta.get("digest") == digest and isinstance(meta.get("diff_id"), str):
                return cls(path, digest, meta["diff_id"], size)
        with gzip.open(path, "rb") as raw:
            diff_id, _ = _stream_digest(raw)  # type: ignore[arg-type]
        return cls(path, digest, diff_id, size)


def _stream_digest(stream: IO[bytes]) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    while chunk := stream.read(_CHUNK):
        h.update(chunk)
        size += len(chunk)
    return "sha256:" + h.hexdigest(), size


def _file_digest(path: Path) -> tuple[str, int]:
    with path.open("rb") as f:
        return _stream_digest(f)


def _normalize(info: tarfile.TarInfo) -> tarfile.TarInfo:
    # Ownership and times are what make two builds of the same files differ; pin them.
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mtime = 0
    info.pax_headers = {}
    return info


def _walk_dir(
    directory: Path, prefix: str, empty_dirs: frozenset[str]
) -> Iterator[tuple[Path, str]]:
    for name in sorted(os.listdir(directory)):
        path = directory / name
        arcname = f"{prefix}{name}"
        yield path, arcname
        if path.is_dir() and not path.is_symlink() and arcname not in empty_dirs:
            yield from _walk_dir(path, arcname + "/", empty_dirs)


def write_layer(root: Path, out: Path, empty_dirs: Iterable[str] = (), level: int = 6) -> Layer:
    """Tars the tree under root (paths relative to it) into a gzip layer at out.

    Directories named in empty_dirs (archive names, e.g. "dev") are kept but not their
    contents: the runtime mounts over them. Sockets are skipped; tar cannot hold them.
    """
    keep_empty = frozenset(d.strip("/") for d in empty_dirs)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with tmp.open("wb") as f:
        compressed = _HashingWriter(f)
        with gzip.GzipFile(
            filename="", mode="wb", fileobj=compressed, mtime=0, compresslevel=level
        ) as gz:
            plain = _HashingWriter(gz)  # type: ignore[arg-type]
            with tarfile.open(fileobj=plain, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                for path, arcname in _walk_dir(root, "", keep_empty):
                    mode = path.lstat().st_mode
                    if stat.S_ISSOCK(mode):
                        continue
                    info = _normalize(tar.gettarinfo(str(path), arcname))
                    if info.isreg():
                        with path.open("rb") as src:
                            tar.addfile(info, src)
                    else:
                        tar.addfile(info)
    layer = Layer(out, compressed.digest(), plain.digest(), compressed.size)
    tmp.replace(out)
    layer.sidecar().write_text(json.dumps(layer.to_json(), indent=2) + "\n")
    return layer


@dataclass
class ImageSpec:
    """One tagged image: its layers (bottom first) and the runtime part of its config."""

    name: str  # full reference, e.g. bascule.local/sample-app:v1
    layers: list[Layer]
    config: dict[str, Any] = field(default_factory=dict)
    architecture: str = ""
    os: str = "linux"

    @property
    def tag(self) -> str:
        last = self.name.rsplit("/", 1)[-1]
        return last.split(":", 1)[1] if ":" in last else "latest"


def image_config(spec: ImageSpec) -> dict[str, Any]:
    return {
        "architecture": spec.architecture or host_architecture(),
        "os": spec.os,
        "created": EPOCH,
        "config": spec.config,
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in spec.layers]},
        "history": [
            {"created": EPOCH, "created_by": f"bascule oci.py layer {layer.path.name}"}
            for layer in spec.layers
        ],
    }


def _descriptor(media_type: str, data: bytes) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": sha256_digest(data), "size": len(data)}


@dataclass
class Layout:
    """The JSON documents of an OCI image layout, plus the layer files its blobs refer to."""

    index: dict[str, Any]
    json_blobs: dict[str, bytes]  # digest -> config or manifest bytes
    layer_blobs: dict[str, Path]  # digest -> gzip layer file


def build_layout(images: Sequence[ImageSpec]) -> Layout:
    json_blobs: dict[str, bytes] = {}
    layer_blobs: dict[str, Path] = {}
    manifests = []
    names = [image.name for image in images]
    if len(set(names)) != len(names):
        raise ValueError(f"image names must be unique, got {names}")
    for image in images:
        config = canonical_json(image_config(image))
        config_desc = _descriptor(MEDIA_CONFIG, config)
        json_blobs[config_desc["digest"]] = config
        for layer in image.layers:
            layer_blobs[layer.digest] = layer.path
        manifest = canonical_json(
            {
                "schemaVersion": 2,
                "mediaType": MEDIA_MANIFEST,
                "config": config_desc,
                "layers": [
                    {"mediaType": MEDIA_LAYER, "digest": lay.digest, "size": lay.size}
                    for lay in image.layers
                ],
            }
        )
        desc = _descriptor(MEDIA_MANIFEST, manifest)
        json_blobs[desc["digest"]] = manifest
        desc["platform"] = {
            "architecture": image.architecture or host_architecture(),
            "os": image.os,
        }
        desc["annotations"] = {ANNOTATION_IMAGE_NAME: image.name, ANNOTATION_REF_NAME: image.tag}
        manifests.append(desc)
    index = {"schemaVersion": 2, "mediaType": MEDIA_INDEX, "manifests": manifests}
    return Layout(index, json_blobs, layer_blobs)


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    tar.addfile(_normalize(info), io.BytesIO(data))


def _add_dir(tar: tarfile.TarFile, name: str) -> None:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = 0o755
    tar.addfile(_normalize(info))


def write_archive(images: Sequence[ImageSpec], out: Path) -> Layout:
    """Writes the images as one OCI layout tar; layers shared between images are stored once."""
    layout = build_layout(images)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with tarfile.open(tmp, mode="w", format=tarfile.PAX_FORMAT) as tar:
        _add_bytes(tar, "oci-layout", canonical_json({"imageLayoutVersion": "1.0.0"}))
        _add_bytes(tar, "index.json", canonical_json(layout.index))
        _add_dir(tar, "blobs")
        _add_dir(tar, "blobs/sha256")
        blobs: dict[str, bytes | Path] = {**layout.json_blobs, **layout.layer_blobs}
        for digest in sorted(blobs):
            name = "blobs/sha256/" + digest.removeprefix("sha256:")
            blob = blobs[digest]
            if isinstance(blob, bytes):
                _add_bytes(tar, name, blob)
                continue
            info = tarfile.TarInfo(name)
            info.size = blob.stat().st_size
            info.mode = 0o644
            with blob.open("rb") as src:
                tar.addfile(_normalize(info), src)
    tmp.replace(out)
    return layout


def verify_archive(path: Path) -> list[str]:
    """Checks an archive the way an importer would; returns the problems found (none if good)."""
    problems: list[str] = []
    with tarfile.open(path) as tar:
        members = {m.name.removeprefix("./"): m for m in tar.getmembers()}

        def read(name: str) -> bytes | None:
            member = members.get(name)
            f = tar.extractfile(member) if member else None
            return f.read() if f else None

        def blob(digest: str) -> bytes | None:
            data = read("blobs/sha256/" + digest.removeprefix("sha256:"))
            if data is None:
                problems.append(f"blob {digest} is missing")
            elif sha256_digest(data) != digest:
                problems.append(f"blob {digest} does not match its content")
            return data

        layout = read("oci-layout")
        if layout is None or json.loads(layout).get("imageLayoutVersion") != "1.0.0":
            problems.append("oci-layout is missing or not version 1.0.0")
        raw_index = read("index.json")
        if raw_index is None:
            return [*problems, "index.json is missing"]
        index = json.loads(raw_index)
        checked: dict[str, tuple[str, str, int]] = {}  # layers shared by images are read once
        for desc in index.get("manifests", []):
            name = desc.get("annotations", {}).get(ANNOTATION_IMAGE_NAME, desc.get("digest"))
            if desc.get("mediaType") != MEDIA_MANIFEST:
                problems.append(f"{name}: index entry media type is {desc.get('mediaType')}")
            raw = blob(desc["digest"])
            if raw is None:
                continue
            manifest = json.loads(raw)
            if (
                manifest.get("mediaType") != MEDIA_MANIFEST
                or manifest.get("config", {}).get("mediaType") != MEDIA_CONFIG
            ):
                problems.append(f"{name}: manifest or config media type is wrong")
            raw_config = blob(manifest["config"]["digest"])
            if raw_config is None:
                continue
            diff_ids = json.loads(raw_config).get("rootfs", {}).get("diff_ids", [])
            if len(diff_ids) != len(manifest.get("layers", [])):
                problems.append(
                    f"{name}: {len(diff_ids)} diff_ids for {len(manifest['layers'])} layers"
                )
            for layer, diff_id in zip(manifest.get("layers", []), diff_ids, strict=False):
                if layer.get("mediaType") != MEDIA_LAYER:
                    problems.append(
                        f"{name}: layer {layer['digest']} media type is {layer.get('mediaType')}"
                    )
                if layer["digest"] not in checked:
                    name_in_tar = "blobs/sha256/" + layer["digest"].removeprefix("sha256:")
                    member = members.get(name_in_tar)
                    f = tar.extractfile(member) if member else None
                    if f is None:
                        problems.append(f"{name}: layer blob {layer['digest']} is missing")
                        continue
                    blob_digest, blob_size = _stream_digest(f)
                    f.seek(0)
                    with gzip.GzipFile(fileobj=f) as gz:
                        uncompressed, _ = _stream_digest(gz)  # type: ignore[arg-type]
                    checked[layer["digest"]] = (blob_digest, uncompressed, blob_size)
                blob_digest, actual_diff_id, blob_size = checked[layer["digest"]]
                if blob_digest != layer["digest"] or blob_size != layer["size"]:
                    problems.append(
                        f"{name}: layer blob {layer['digest']} does not match its digest or size"
                    )
                if actual_diff_id != diff_id:
                    problems.append(
                        f"{name}: diff_id {diff_id} != uncompressed layer {actual_diff_id}"
                    )
    return problems


def load_spec(path: Path) -> list[ImageSpec]:
    """Reads an archive spec: {"images": [{"name", "layers": [paths], "config": {...}}]}.

    Relative layer paths are relative to the spec file.
    """
    spec = json.loads(path.read_text())
    images = []
    for entry in spec["images"]:
        layers = [Layer.load((path.parent / p).resolve()) for p in entry["layers"]]
        images.append(
            ImageSpec(
                name=entry["name"],
                layers=layers,
                config=entry.get("config", {}),
                architecture=entry.get("architecture", ""),
                os=entry.get("os", "linux"),
            )
        )
    return images


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="command", required=True)
    p_layer = sub.add_parser(
        "layer", help="tar a directory into a gzip layer (+ OUT.json with its digests)"
    )
    p_layer.add_argument("root", type=Path)
    p_layer.add_argument("out", type=Path)
    p_layer.add_argument(
        "--empty-dir", action="append", default=[], help="keep this directory but not its contents"
    )
    p_archive = sub.add_parser("archive", help="write an OCI layout tar from a JSON spec")
    p_archive.add_argument("spec", type=Path)
    p_archive.add_argument("out", type=Path)
    p_verify = sub.add_parser(
        "verify", help="check digests, diff_ids and media types of an archive"
    )
    p_verify.add_argument("archive", type=Path)
    args = parser.parse_args(argv)

    if args.command == "layer":
        if not args.root.is_dir():
            parser.error(f"layer root {args.root} is not a directory")
        layer = write_layer(args.root, args.out, args.empty_dir)
        print(json.dumps(layer.to_json()))
    elif args.command == "archive":
        layout = write_archive(load_spec(args.spec), args.out)
        for desc in layout.index["manifests"]:
            print(f"{desc['annotations'][ANNOTATION_IMAGE_NAME]} {desc['digest']}", file=sys.stderr)
    else:
        problems = verify_archive(args.archive)
        for problem in problems:
            print(f"{args.archive}: {problem}", file=sys.stderr)
        return 1 if problems else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
