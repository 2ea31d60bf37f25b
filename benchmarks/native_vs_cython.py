"""numba or Cython for the compiled core: the cost of one crossing from Python and of
one small kernel, measured side by side on the same code.

The core is called from Python once per market event and once per quote
decision, so what matters is (1) the fixed cost of a call with a few arrays
(the crossing) and (2) the speed of short, branchy loops over them. Both are
timed here for numba (``@njit(cache=True)``, the dispatcher FlashMM uses) and
for Cython 3 (typed memoryviews, ``boundscheck=False``, ``-O3``), on:

- calls with 1, 4 and 7 int64/float64 arrays (the core's ``decide`` takes 7)
  and with 42 scalars (a call that passes every input one by one);
- the features' time decay (5 ``exp`` and 45 multiply-adds, the work of one
  trade) on the same arrays.

Cython is needed only here: ``pip install cython`` (the module is built in a
temporary folder; a C compiler and the Python headers are needed). Without it
the numba rows are printed alone.

    python benchmarks/native_vs_cython.py
"""

from __future__ import annotations

import importlib
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from numba import njit

N = 200_000

PYX = """
# cython: boundscheck=False, wraparound=False, cdivision=True, language_level=3
from libc.math cimport exp

def a1(long long[::1] a):
    return a[0]

def a4(long long[::1] a, double[::1] b, long long[::1] c, double[::1] d):
    return a[0] + c[0]

def a7(long long[::1] a, double[::1] b, long long[::1] c, double[::1] d,
       long long[::1] e, double[::1] f, float[::1] g):
    return a[0] + c[0] + e[0]

def s42(ARGS):
    return x0 + x41

cdef double[5] TAUS = [1.0, 5.0, 30.0, 120.0, 600.0]

def decay(long long[::1] ist, double[::1] fst, long long ts):
    cdef long long dt = ts - ist[0]
    cdef double a
    cdef int k, c
    if dt > 0:
        for k in range(5):
            a = exp(-dt * 1e-9 / TAUS[k])
            for c in range(9):
                fst[k * 9 + c] *= a
        for c in range(9):
            fst[c] += 1.0
        ist[0] = ts
    return 0
""".replace("ARGS", ", ".join(f"long long x{i}" for i in range(42)))

TAUS = np.array([1.0, 5.0, 30.0, 120.0, 600.0])


@njit(cache=True)
def a1(a: np.ndarray) -> int:
    return a[0]


@njit(cache=True)
def a4(a: np.ndarray, b: np.ndarray, c: np.ndarray, d: np.ndarray) -> int:
    return a[0] + c[0]


@njit(cache=True)
def a7(a, b, c, d, e, f, g):  # type: ignore[no-untyped-def]
    return a[0] + c[0] + e[0]


_S42 = "def s42({}):\n    return x0 + x41\n".format(", ".join(f"x{i}" for i in range(42)))
_ns: dict[str, Any] = {}
exec(_S42, _ns)  # a 42-argument function, written out once
s42 = njit(cache=False)(_ns["s42"])


@njit(cache=True)
def decay(ist: np.ndarray, fst: np.ndarray, ts: int) -> int:
    dt = ts - ist[0]
    if dt > 0:
        for k in range(5):
            a = np.exp(-dt * 1e-9 / TAUS[k])
            for c in range(9):
                fst[k * 9 + c] *= a
        for c in range(9):
            fst[c] += 1.0
        ist[0] = ts
    return 0


def build_cython() -> Any:
    try:
        import Cython  # noqa: F401
    except ImportError:
        return None
    d = Path(tempfile.mkdtemp(prefix="flashmm-cy-"))
    (d / "cycore.pyx").write_text(PYX)
    (d / "setup.py").write_text(
        "from setuptools import setup, Extension\nfrom Cython.Build import cythonize\n"
        "setup(ext_modules=cythonize([Extension('cycore', ['cycore.pyx'],"
        " extra_compile_args=['-O3'])], quiet=True))\n"
    )
    t0 = time.perf_counter()
    r = subprocess.run(
        [sys.executable, "setup.py", "build_ext", "--inplace"],
        cwd=d,
        capture_output=True,
        text=True,
    )
    if r.returncode:
        print("cython build failed:", r.stderr.strip().splitlines()[-1:])
        return None
    print(f"cython module built in {time.perf_counter() - t0:.1f} s (C compile, once)")
    sys.path.insert(0, str(d))
    return importlib.import_module("cycore")


def per_call_ns(fn: Any, *args: Any) -> tuple[float, float]:
    """p50 and p99 of one call, ns (timed in blocks of 100 calls)."""
    fn(*args)
    blocks = []
    pc = time.perf_counter_ns
    for _ in range(N // 100):
        t = pc()
        for _ in range(100):
            fn(*args)
        blocks.append((pc() - t) / 100)
    p50, p99 = np.percentile(blocks, [50, 99])
    return float(p50), float(p99)


def main() -> None:
    ist = np.zeros(8, dtype=np.int64)
    fst = np.zeros(64)
    x = np.zeros(64, dtype=np.float32)
    scal = list(range(42))
    cy = build_cython()
    rows = [
        ("call, 1 array", (a1, cy and cy.a1), (ist,)),
        ("call, 4 arrays", (a4, cy and cy.a4), (ist, fst, ist, fst)),
        ("call, 7 arrays", (a7, cy and cy.a7), (ist, fst, ist, fst, ist, fst, x)),
        ("call, 42 scalars", (s42, cy and cy.s42), tuple(scal)),
    ]
    print(f"{'':<34}{'numba p50':>12}{'p99':>9}{'Cython p50':>13}{'p99':>9}   (ns per call)")
    for name, (nb, c), args in rows:
        n50, n99 = per_call_ns(nb, *args)
        line = f"{name:<34}{n50:>12.0f}{n99:>9.0f}"
        if c is not None:
            c50, c99 = per_call_ns(c, *args)
            line += f"{c50:>13.0f}{c99:>9.0f}"
        print(line)
    # the decay kernel: a growing timestamp so every call does the work
    t = [0]

    def nb_decay() -> None:
        t[0] += 1000
        decay(ist, fst, t[0])

    def cy_decay() -> None:
        t[0] += 1000
        cy.decay(ist, fst, t[0])

    n50, n99 = per_call_ns(nb_decay)
    line = f"{'decay kernel (call + 5 exp, 54 ops)':<34}{n50:>12.0f}{n99:>9.0f}"
    if cy is not None:
        c50, c99 = per_call_ns(cy_decay)
        line += f"{c50:>13.0f}{c99:>9.0f}"
    print(line)


if __name__ == "__main__":
    main()
