"""Start-up time of the ``flashmm`` command: wall and CPU time per call, in fresh processes.

    python benchmarks/cli_startup.py [--runs N]

Each command runs N times (default 7) as ``python -m flashmm ...`` from an empty
temporary folder with no bot running; the table shows the fastest and the median
wall time and the median CPU time (user + system of the child). The targets are
for an idle machine: ``--help`` <= 0.3 s, ``status`` (no bot) <= 0.5 s. On a busy
machine the CPU column is the steadier figure.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

COMMANDS: list[tuple[str, list[str], float | None]] = [
    ("python -c pass (interpreter only)", ["-c", "pass"], None),
    ("flashmm --help", ["-m", "flashmm", "--help"], 0.3),
    ("flashmm version", ["-m", "flashmm", "version"], None),
    ("flashmm status (no bot)", ["-m", "flashmm", "status"], 0.5),
    ("flashmm config validate paper", ["-m", "flashmm", "config", "validate", "paper"], None),
]


def measure(
    args: list[str], runs: int, cwd: str, env: dict[str, str]
) -> tuple[float, float, float]:
    walls, cpus = [], []
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        subprocess.run(
            [sys.executable, *args], cwd=cwd, env=env, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, check=False,
        )  # fmt: skip
        walls.append(time.perf_counter() - t0)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return min(walls), statistics.median(walls), statistics.median(cpus)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=7, metavar="N", help="calls per command")
    opts = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="flashmm-startup-") as tmp:
        env = dict(os.environ, XDG_RUNTIME_DIR=tmp, COLUMNS="100")
        print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs, {opts.runs} runs")
        print(f"{'command':<34} {'wall min':>9} {'median':>8} {'cpu':>7}  target")
        for name, args, target in COMMANDS:
            lo, med, cpu = measure(args, opts.runs, tmp, env)
            goal = "" if target is None else f"<= {target:.1f} s"
            print(f"{name:<34} {lo:>8.3f}s {med:>7.3f}s {cpu:>6.3f}s  {goal}")


if __name__ == "__main__":
    main()
