"""Each manifest source through real deploys on the real cluster: a Kustomize directory with
an HPA and a PDB (the HPA's count survives a deploy, each color has its own PDB, and a color
whose release drops them loses its own), and a Helm
chart whose ConfigMap, mounted by the pods, changes in v2 (a rollback serves v1's file
again). Rendered by the real kubectl and helm (the `rendering_tools` fixture). The plain
directory's deploys, its Service port change and a refused kind: test_workload_kinds."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from tests.integration.test_workload_kinds import (
    APP,
    MOUNT,
    SCALED,
    V1,
    V2,
    assert_an_hpa_per_color,
    deploy,
    files,
    named,
)
from tests.support import deploys
from tests.support.cluster import Cluster, wait_for
from tests.support.envs import write_envs
from tests.support.sample import DISRUPTION_BUDGET, autoscaler

pytestmark = [pytest.mark.cluster, pytest.mark.prefect, pytest.mark.slow]

KUSTOMIZATION = """\
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources: [deployment.yaml, service.yaml, hpa.yaml, pdb.yaml]
# Only kustomize puts this label on the pods, which the PDB selects: proof that it rendered.
labels:
  - pairs: {tier: web}
    includeTemplates: true
"""


def test_a_kustomize_app_keeps_its_hpas_count_and_a_pdb_per_color(
    cluster: Cluster,
    namespace: str,
    prefect_server: str,
    tmp_path: Path,
    rendering_tools: dict[str, str],
) -> None:
    cfg = write_envs(tmp_path / "cfg", namespace, cluster.kubeconfig, {}, ("staging",))
    base = cfg / "manifests"
    (base / "kustomization.yaml").write_text(KUSTOMIZATION)
    (base / "hpa.yaml").write_text(yaml.safe_dump(autoscaler(2, 4)))
    (base / "pdb.yaml").write_text(yaml.safe_dump(DISRUPTION_BUDGET))
    checked = deploys.run(prefect_server, "validate", "--dir", str(cfg), "staging")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "PodDisruptionBudget web" in checked.stdout and "per color" in checked.stdout

    deploy(prefect_server, cfg, V1)
    # The HPA's doing (a scale, as it would), which no deploy takes back.
    cluster.kubectl("-n", namespace, "scale", f"deployment/{APP}-blue", f"--replicas={SCALED}")
    deploy(prefect_server, cfg, V2)

    assert deploys.active_color(cluster, namespace) == "green"
    assert deploys.replicas(cluster, namespace, "green") == SCALED
    assert_an_hpa_per_color(cluster, namespace)
    pdbs = named(cluster, namespace, "pdb", f"app.kubernetes.io/name={APP}")
    selected = {n: p["spec"]["selector"]["matchLabels"] for n, p in pdbs.items()}
    # Each selects its color's pods only (the template's `tier: web` selected both colors).
    assert selected == {
        f"{APP}-{color}": {"app.kubernetes.io/name": APP, "bascule.io/color": color}
        for color in ("blue", "green")
    }
    pods = cluster.get_json("-n", namespace, "pods", "-l", "bascule.io/color=green")["items"]
    assert pods and all(p["metadata"]["labels"].get("tier") == "web" for p in pods)

    # Both taken out of the manifests: the color the next release goes to loses its HPA, which
    # would go on scaling it, and its PDB; the serving color keeps its own. Bascule sets the
    # count again.
    (base / "kustomization.yaml").write_text(KUSTOMIZATION.replace(", hpa.yaml, pdb.yaml", ""))
    deploy(prefect_server, cfg, V1)
    label = f"app.kubernetes.io/name={APP}"
    assert set(named(cluster, namespace, "hpa", label)) == {f"{APP}-green"}
    assert set(named(cluster, namespace, "pdb", label)) == {f"{APP}-green"}
    configured = yaml.safe_load((cfg / "staging.yaml").read_text())["replicas"]
    assert configured != SCALED
    assert deploys.replicas(cluster, namespace, "blue") == configured


def chart(cfg: Path) -> Path:
    """A Helm chart of the sample app whose pods mount the ConfigMap `settings`, holding the
    value `message`; its values file for a deploy is ``message.yaml`` in the chart."""
    root = cfg / "chart"
    (root / "templates").mkdir(parents=True)
    (root / "Chart.yaml").write_text("apiVersion: v2\nname: app\nversion: 0.1.0\n")
    (root / "values.yaml").write_text("message: unset\n")
    deployment = yaml.safe_load((cfg / "manifests" / "deployment.yaml").read_text())
    pod = deployment["spec"]["template"]["spec"]
    pod["volumes"] = [{"name": "settings", "configMap": {"name": "settings"}}]
    pod["containers"][0]["volumeMounts"] = [
        {"name": "settings", "mountPath": MOUNT, "readOnly": True}
    ]
    (root / "templates" / "deployment.yaml").write_text(yaml.safe_dump(deployment))
    shutil.copy(cfg / "manifests" / "service.yaml", root / "templates" / "service.yaml")
    (root / "templates" / "settings.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\n"
        "data:\n  message: {{ .Values.message | quote }}\n"
    )
    return root


def test_a_helm_apps_mounted_configmap_changes_and_a_rollback_serves_the_old_file(
    cluster: Cluster,
    namespace: str,
    prefect_server: str,
    tmp_path: Path,
    rendering_tools: dict[str, str],
) -> None:
    source = {"manifests": {"path": "chart", "values": ["chart/message.yaml"]}}
    cfg = write_envs(tmp_path / "cfg", namespace, cluster.kubeconfig, source, ("staging",))
    root = chart(cfg)

    (root / "message.yaml").write_text("message: hello from v1\n")
    deploy(prefect_server, cfg, V1)
    assert wait_for(lambda: files(cluster, namespace, "blue") == {"hello from v1"}, 30)
    (root / "message.yaml").write_text("message: hello from v2\n")
    deploy(prefect_server, cfg, V2)
    assert wait_for(lambda: files(cluster, namespace, "green") == {"hello from v2"}, 30)

    res = deploys.run(prefect_server, "rollback", "--dir", str(cfg), "staging")
    assert res.returncode == 0, res.stdout + res.stderr
    assert deploys.active_color(cluster, namespace) == "blue"
    assert wait_for(lambda: files(cluster, namespace, "blue") == {"hello from v1"}, 60)
    # Each release's file is a ConfigMap of its own, immutable.
    settings = named(cluster, namespace, "configmap", "bascule.io/release-config=true")
    assert len(settings) == 2 and all(cm.get("immutable") for cm in settings.values())
