"""deploy/compose.yaml and its Prometheus/Grafana files: wired together as documented."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from flashmm.config import load_config

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"


def test_compose_services_files_and_ports() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    assert {"bot", "prometheus", "grafana"} <= set(services)
    local = {n for n, s in services.items() if "local-chain" in s.get("profiles", [])}
    assert local == {"chain", "chain-setup", "feed", "bot-local"}
    for name, svc in services.items():
        for port in svc.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), (name, port)  # loopback only
        for vol in svc.get("volumes", []):
            src = str(vol).split(":")[0]
            if src.startswith("./"):
                assert (DEPLOY / src).exists(), (name, src)
    assert services["bot"]["build"]["dockerfile"] == "deploy/Dockerfile"
    assert "FLASHMM_API_TOKEN" in services["bot"]["environment"]
    # the local bot's overrides are valid for the bundled local profile
    cmd = services["bot-local"]["command"]
    sets = [cmd[i + 1] for i, a in enumerate(cmd) if a == "--set"]
    cfg = load_config(cmd[cmd.index("--config") + 1], sets)
    assert cfg.api.enabled and cfg.mode == "live"


def test_prometheus_scrapes_the_bot_with_a_token_and_grafana_gets_the_dashboard() -> None:
    prom = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    (job,) = prom["scrape_configs"]
    assert job["static_configs"][0]["targets"] == ["bot:8780"]
    assert job["authorization"]["type"] == "Bearer"
    ds = yaml.safe_load(
        (DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yaml").read_text()
    )
    assert ds["datasources"][0]["url"] == "http://prometheus:9090"
    dash = json.loads((DEPLOY / "grafana" / "flashmm.json").read_text())
    assert dash["uid"] == "flashmm" and dash["panels"]
