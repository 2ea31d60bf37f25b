"""deploy/compose.yaml and its Prometheus/Grafana files: wired together as documented."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
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


def test_podman_compose_reads_the_file_with_and_without_the_local_chain_profile() -> None:
    """podman-compose (PyPI, the test extras) parses, merges and resolves compose.yaml."""
    exe = shutil.which("podman-compose") or str(Path(sys.executable).parent / "podman-compose")
    if not Path(exe).exists():
        if os.environ.get("CI"):
            pytest.fail("podman-compose is not installed (it is in the test extras)")
        pytest.skip("podman-compose not installed (pip install -e '.[test]')")
    env = {**os.environ, "FLASHMM_API_TOKEN": "t" * 48}
    base = [exe, "-f", str(DEPLOY / "compose.yaml")]
    seen = {}
    for profile in ((), ("--profile", "local-chain")):
        r = subprocess.run(
            [*base, *profile, "config"], capture_output=True, text=True, env=env, timeout=120
        )
        assert r.returncode == 0, r.stderr[-2000:]
        seen[profile] = yaml.safe_load(r.stdout)["services"]
    assert set(seen[()]) == {"bot", "prometheus", "grafana"}
    assert set(seen[("--profile", "local-chain")]) == {
        "bot", "prometheus", "grafana", "chain", "chain-setup", "feed", "bot-local"
    }  # fmt: skip
    bot = seen[()]["bot"]
    assert bot["environment"]["FLASHMM_API_TOKEN"] == "t" * 48
    assert bot["build"]["dockerfile"] == "deploy/Dockerfile"
    assert bot["read_only"] is True and bot["cap_drop"] == ["ALL"]
    # without the token the file refuses, naming the variable
    env.pop("FLASHMM_API_TOKEN")
    r = subprocess.run([*base, "config"], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode != 0 and "FLASHMM_API_TOKEN" in r.stderr


def test_docs_list_every_dashboard_panel_and_query() -> None:
    """docs/operations.md shows the Grafana dashboard in readable form: kept in step."""
    docs = (DEPLOY.parent / "docs" / "operations.md").read_text()
    dash = json.loads((DEPLOY / "grafana" / "flashmm.json").read_text())
    for panel in dash["panels"]:
        assert f"| {panel['title']} |" in docs, panel["title"]
        for target in panel["targets"]:
            assert f"`{target['expr']}`" in docs, target["expr"]
