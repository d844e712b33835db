"""The README's quickstart ("Bascule for your app"), read from README.md, and what its test
needs besides: an app of its own with its own images, built with the local cluster's OCI
tooling and imported into its containerd.

The quickstart's files are its ```yaml blocks whose first line names the file
(``# deployments/sandbox.yaml``); its commands are the lines of its ```sh blocks (a line ending
in ``\\`` goes on on the next). The test takes both from here, so the README and the test
cannot drift apart.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tests.support.cluster import CLUSTER_DIR, REPO, Cluster

SECTION = "## Bascule for your app"
# The app's code: only its image holds it (the app's repository in the test holds what the
# quickstart says to write, nothing else).
APP_SOURCE = REPO / "tests" / "quickstart" / "server.py"
IMAGE_REPOSITORY = "bascule.local/quickstart-web"
VERSIONS = ("v1", "v2")
# Bump when the image recipe below changes, so cached archives are rebuilt.
IMAGE_RECIPE = 1
_FILE = re.compile(r"^# (?P<path>[\w./-]+)$")
_FENCE = re.compile(r"^```(?P<lang>\w*)\n(?P<body>.*?)^```$", re.M | re.S)


@dataclass(frozen=True)
class Quickstart:
    text: str  # the section, heading to the next heading of its level
    files: dict[str, str]  # path in the app's repository -> content
    commands: list[str]  # shell command lines, continuations joined, comments dropped

    def command(self, *words: str) -> str:
        """The one command holding every one of ``words``."""
        found = [c for c in self.commands if all(w in c for w in words)]
        assert len(found) == 1, f"the quickstart's commands with {words}: {found}"
        return found[0]


def read(readme: Path = REPO / "README.md") -> Quickstart:
    text = readme.read_text()
    start = text.index(SECTION + "\n")
    end = text.find("\n## ", start + len(SECTION))
    section = text[start : end if end != -1 else len(text)]
    files: dict[str, str] = {}
    commands: list[str] = []
    for block in _FENCE.finditer(section):
        lang, body = block["lang"], block["body"]
        first, _, rest = body.partition("\n")
        if lang in ("yaml", "yml") and (named := _FILE.match(first)):
            assert named["path"] not in files, f"{named['path']} twice in the quickstart"
            files[named["path"]] = rest
        elif lang == "sh":
            commands += _lines(body)
    return Quickstart(section, files, commands)


def _lines(script: str) -> list[str]:
    out: list[str] = []
    pending = ""
    for raw in script.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1].strip() + " "
            continue
        command = (pending + line).strip()
        pending = ""
        # A comment after a command is the reader's, not the shell's business here.
        out.append(re.sub(r"\s+#\s.*$", "", command))
    return out


def substitute(text: str, placeholders: dict[str, str]) -> str:
    for old, new in placeholders.items():
        text = text.replace(old, new)
    return text


# --- the app's images ------------------------------------------------------------------------


def images(cluster: Cluster) -> dict[str, str]:
    """The app's images, ``IMAGE_REPOSITORY:<version>`` by version, in the local cluster's
    containerd (by tag and by digest, as the sample app's: tests/cluster/images.sh). Built
    with tests/cluster/images/oci.py on the sample app's Debian rootfs, the archive cached
    under $BASCULE_CACHE/images keyed by the app's source and the rootfs."""
    assert cluster.cluster_dir is not None, "the app's images go into the local cluster"
    refs = {v: f"{IMAGE_REPOSITORY}:{v}" for v in VERSIONS}
    ctr = [
        str(Path(cluster.kubectl_bin).parent / "ctr"),
        "--address",
        str(cluster.cluster_dir / "containerd" / "containerd.sock"),
        "-n",
        "k8s.io",
    ]
    held = _run([*ctr, "images", "ls", "-q"]).split()
    if all(ref in held for ref in refs.values()):
        return refs
    rootfs = Path(_run([str(CLUSTER_DIR / "images" / "build-images.sh"), "--rootfs"]).split()[-1])
    cache = Path(os.environ.get("BASCULE_CACHE", Path.home() / ".cache" / "bascule")) / "images"
    key = hashlib.sha256(
        f"{IMAGE_RECIPE} {rootfs} {VERSIONS}\n".encode() + APP_SOURCE.read_bytes()
    ).hexdigest()[:16]
    archive = cache / f"quickstart-web-{key}.oci.tar"
    with (cache / ".quickstart-lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not archive.exists():
            _build(rootfs, refs, archive)
    _run([*ctr, "images", "import", str(archive)])
    for line in _run([*ctr, "images", "ls"]).splitlines()[1:]:
        ref, _, digest = line.split()[:3]
        if ref in refs.values():  # a pod's imageID then names the digest, as from a registry
            _run([*ctr, "images", "tag", "--force", ref, f"{IMAGE_REPOSITORY}@{digest}"])
    return refs


def _build(rootfs: Path, refs: dict[str, str], archive: Path) -> None:
    oci = [sys.executable, str(CLUSTER_DIR / "images" / "oci.py")]
    with tempfile.TemporaryDirectory(dir=archive.parent) as tmp:
        root = Path(tmp) / "root" / "app"
        root.mkdir(parents=True)
        shutil.copy(APP_SOURCE, root / "server.py")
        # The checkout's umask must not decide the image's modes.
        root.chmod(0o755)
        (root / "server.py").chmod(0o644)
        _run([*oci, "layer", str(root.parent), f"{tmp}/app.tar.gz"])
        spec = {
            "images": [
                {
                    "name": ref,
                    "layers": [str(rootfs), f"{tmp}/app.tar.gz"],
                    "config": {
                        "Env": [
                            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                            "PYTHONDONTWRITEBYTECODE=1",
                            f"APP_VERSION={version}",
                        ],
                        "Cmd": ["python3", "/app/server.py"],
                        "User": "65534:65534",
                        "ExposedPorts": {"8080/tcp": {}},
                    },
                }
                for version, ref in refs.items()
            ]
        }
        (Path(tmp) / "spec.json").write_text(json.dumps(spec))
        _run([*oci, "archive", f"{tmp}/spec.json", f"{tmp}/web.oci.tar"])
        _run([*oci, "verify", f"{tmp}/web.oci.tar"])
        Path(f"{tmp}/web.oci.tar").replace(archive)


def _run(argv: list[str]) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, f"{argv[:3]}: {done.stderr[-2000:]}"
    return done.stdout
