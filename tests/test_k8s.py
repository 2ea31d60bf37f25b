"""deploy/k8s manifests: schema-valid (kubernetes-validate, strict) and wired as documented."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

kv = pytest.importorskip("kubernetes_validate")

from flashmm.config import load_config  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "deploy" / "k8s"


def docs() -> list[dict[str, Any]]:
    out = []
    for path in sorted(K8S.glob("*.yaml")):
        out += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return out


def test_every_manifest_validates_strictly() -> None:
    found = docs()
    assert {d["kind"] for d in found} >= {"StatefulSet", "Secret", "Service", "NetworkPolicy"}
    for d in found:
        kv.validate(d, kv.latest_version(), strict=True)


def test_statefulset_volume_secret_probes_scrape_and_flags() -> None:
    by_kind = {d["kind"]: d for d in docs()}
    sts, secret = by_kind["StatefulSet"], by_kind["Secret"]
    spec = sts["spec"]
    assert spec["replicas"] == 1
    pod = spec["template"]
    assert pod["metadata"]["annotations"]["prometheus.io/scrape"] == "true"
    (c,) = pod["spec"]["containers"]
    assert c["envFrom"][0]["secretRef"]["name"] == secret["metadata"]["name"]
    assert "FLASHMM_PRIVATE_KEY" in secret["stringData"]
    assert "FLASHMM_API_TOKEN" in secret["stringData"]
    assert c["livenessProbe"]["httpGet"]["path"] == "/health"
    assert c["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    claim = spec["volumeClaimTemplates"][0]["metadata"]["name"]
    assert {"name": claim, "mountPath": "/var/lib/flashmm"} in c["volumeMounts"]
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    port = int(pod["metadata"]["annotations"]["prometheus.io/port"])
    assert port in [p["containerPort"] for p in c["ports"]]
    # the bot's arguments are a valid profile with these overrides
    args = c["args"]
    assert args[:3] == ["run", "--config", args[2]]
    sets = [args[i + 1] for i, a in enumerate(args) if a == "--set"]
    cfg = load_config(args[2], sets)
    assert cfg.api.enabled and cfg.api.port == port and cfg.api.metrics_public
    assert cfg.control.data_dir == "/var/lib/flashmm"
