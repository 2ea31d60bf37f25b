"""Metrics: a real Prometheus server scrapes the bot's API; the Grafana dashboard's names.

Prometheus is Debian's ``prometheus`` package (``.ci/run`` installs it);
without it the scrape test is skipped locally and fails under CI.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import aiohttp
import pytest

pytest.importorskip("prometheus_client")

from test_api import CONTROL, READ, config, running

from flashmm.ops.metrics import Metrics

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "deploy" / "grafana" / "flashmm.json"


def exported_names(text: str) -> set[str]:
    """Every series name a scrape of this exposition can produce."""
    names: set[str] = set()
    for line in text.splitlines():
        m = re.match(r"# TYPE (\w+) (\w+)", line)
        if not m:
            continue
        name, kind = m.groups()
        if kind == "counter":
            names.add(name if name.endswith("_total") else f"{name}_total")
        elif kind == "histogram":
            names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count", f"{name}_created"}
        else:
            names.add(name)
    return names


def dashboard_exprs() -> list[str]:
    dash = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    exprs += [v["query"] for v in dash["templating"]["list"] if v.get("type") == "query"]
    return exprs


def test_dashboard_queries_use_only_exported_metrics() -> None:
    names = exported_names(Metrics(port=0).render().decode())
    assert {"flashmm_pnl_total_usdc", "flashmm_fills_total", "flashmm_requote_gas_used_total"} <= (
        names
    )
    used: set[str] = set()
    for expr in dashboard_exprs():
        used |= set(re.findall(r"\bflashmm_\w+", expr))
    assert used, "no flashmm metric in the dashboard"
    assert used <= names, f"not exported: {sorted(used - names)}"
    # the dashboard covers what the bot is watched for
    for family in (
        "position",
        "pnl",
        "fills",
        "quotes",
        "gas",
        "breaker",
        "model",
        "feed_age",
        "decision_latency",
    ):
        assert any(family in n for n in used), family


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_real_prometheus_scrapes_the_bot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    binary = shutil.which("prometheus")
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail("prometheus is not installed (.ci/run installs Debian's package)")
        pytest.skip("prometheus not installed (apt-get install prometheus)")
    monkeypatch.setenv("FLASHMM_API_TOKEN", CONTROL)
    monkeypatch.setenv("FLASHMM_API_READ_TOKEN", READ)
    data = Path(tempfile.mkdtemp(prefix="fmmprom"))
    sock = Path(tempfile.mkdtemp(prefix="fmm", dir="/tmp"))
    cfg = config(data, sock)
    prom_port = _free_port()
    proc: subprocess.Popen[bytes] | None = None
    try:
        async with running(cfg) as ops:
            (tmp_path / "token").write_text(READ)
            (tmp_path / "prometheus.yml").write_text(
                "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
                "scrape_configs:\n"
                "  - job_name: flashmm\n"
                "    authorization: {type: Bearer, credentials_file: token}\n"
                f"    static_configs: [{{targets: ['127.0.0.1:{ops.api.port}']}}]\n"
            )
            log = open(tmp_path / "prometheus.log", "wb")  # noqa: SIM115
            proc = subprocess.Popen(
                [
                    binary,
                    f"--config.file={tmp_path / 'prometheus.yml'}",
                    f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{prom_port}",
                ],
                cwd=tmp_path,
                stdout=log,
                stderr=log,
            )
            query = f"http://127.0.0.1:{prom_port}/api/v1/query"
            result: list[dict[str, Any]] = []
            async with aiohttp.ClientSession() as http:
                for _ in range(600):  # up to 60 s
                    await asyncio.sleep(0.1)
                    assert proc.poll() is None, (tmp_path / "prometheus.log").read_text()
                    try:
                        async with http.get(
                            query, params={"query": 'flashmm_breaker_tripped{name="daily_loss"}'}
                        ) as r:
                            body = await r.json()
                    except aiohttp.ClientError:
                        continue
                    result = body.get("data", {}).get("result", [])
                    if result:
                        break
                assert result, (tmp_path / "prometheus.log").read_text()[-2000:]
                assert result[0]["metric"]["job"] == "flashmm"
                assert result[0]["value"][1] == "0"
                async with http.get(query, params={"query": "up"}) as r:
                    up = (await r.json())["data"]["result"]
                assert up and up[0]["value"][1] == "1"
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(data, ignore_errors=True)
        shutil.rmtree(sock, ignore_errors=True)
