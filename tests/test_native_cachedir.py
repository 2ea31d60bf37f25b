"""Where numba's kernel cache goes when the configured folder cannot be written."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flashmm.native import cachedir

ROOT = Path(__file__).resolve().parents[1]


def test_seed_copies_missing_and_newer_files_and_keeps_later_writes(tmp_path: Path) -> None:
    src, dst = tmp_path / "image", tmp_path / "volume"
    (src / "native_abc").mkdir(parents=True)
    (src / "native_abc" / "k.nbi").write_bytes(b"image index")
    (src / "native_abc" / "k.nbc").write_bytes(b"image code")
    old = time.time() - 3600
    os.utime(src / "native_abc" / "k.nbc", (old, old))
    (dst / "native_abc").mkdir(parents=True)
    (dst / "native_abc" / "k.nbc").write_bytes(b"written later by numba")
    assert cachedir.seed(src, dst) == 1
    assert (dst / "native_abc" / "k.nbi").read_bytes() == b"image index"
    assert (dst / "native_abc" / "k.nbc").read_bytes() == b"written later by numba"
    assert not list(dst.rglob("*.tmp"))
    # a newer image's kernels replace the older copy; a second seed copies nothing
    (src / "native_abc" / "k.nbc").write_bytes(b"newer image code")
    assert cachedir.seed(src, dst) == 1
    assert (dst / "native_abc" / "k.nbc").read_bytes() == b"newer image code"
    assert cachedir.seed(src, dst) == 0


def test_candidates_skip_an_empty_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", "")
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)
    assert cachedir.candidates() == [tmp_path / f"flashmm-numba-{os.getuid()}"]
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cachedir.candidates()[0] == tmp_path / "home" / ".cache" / "flashmm" / "numba"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cachedir.candidates()[0] == tmp_path / "xdg" / "flashmm" / "numba"


def run_py(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "PYTHONPATH": str(ROOT), **env}
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=full, timeout=300
    )


def test_an_unwritable_numba_cache_dir_moves_to_a_writable_one(tmp_path: Path) -> None:
    """NUMBA_CACHE_DIR under a plain file cannot be made, even by root: the kernels'
    modules import, and numba (and the background builder, through the environment)
    gets the user's cache folder instead."""
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    code = (
        "import os, flashmm.native.kernels, flashmm.native.backtest\n"
        "from flashmm.native import cachedir\n"
        "from numba.core import config\n"
        "print(os.environ['NUMBA_CACHE_DIR'], config.CACHE_DIR, cachedir.describe())\n"
    )
    xdg = tmp_path / "xdg"
    r = run_py(code, NUMBA_CACHE_DIR=str(blocker / "cache"), XDG_CACHE_HOME=str(xdg))
    assert r.returncode == 0, r.stderr[-2000:]
    want = str(xdg / "flashmm" / "numba")
    assert r.stdout.split() == [want, want, want], r.stdout


def test_a_read_only_compiled_cache_is_copied_before_use(tmp_path: Path) -> None:
    """A folder numba cannot write is skipped by numba even when it holds the compiled
    kernels (the image's cache under a read-only root). Root writes anywhere, so the
    read-only folder is named to the check rather than mounted."""
    image = tmp_path / "image-cache"
    (image / "native_x").mkdir(parents=True)
    (image / "native_x" / "kernels.k-1.py311.nbi").write_bytes(b"compiled at build")
    code = (
        "from pathlib import Path\n"
        "from flashmm.native import cachedir\n"
        f"ro = Path({str(image)!r})\n"
        "real = cachedir.writable\n"
        "cachedir.writable = lambda p: p != ro and real(p)\n"
        "print(cachedir.usable(), cachedir.describe())\n"
    )
    xdg = tmp_path / "xdg"
    r = run_py(code, NUMBA_CACHE_DIR=str(image), XDG_CACHE_HOME=str(xdg))
    assert r.returncode == 0, r.stderr[-2000:]
    target = xdg / "flashmm" / "numba"
    assert r.stdout.strip() == f"True {target} (copied from read-only {image})"
    assert (target / "native_x" / "kernels.k-1.py311.nbi").read_bytes() == b"compiled at build"


def test_no_writable_folder_anywhere_compiles_without_a_disk_cache(tmp_path: Path) -> None:
    """Nothing writable at all (the fault is named to the checks): the kernels' modules
    import (before, numba raised "no locator available") and compile without a cache."""
    code = (
        "from flashmm.native import cachedir\n"
        "cachedir.writable = lambda p: False\n"
        "cachedir._numba_has_a_place = lambda: False\n"
        "import flashmm.native.replay\n"
        "from flashmm.native import kernels\n"
        "print(cachedir.usable(), cachedir.describe())\n"
    )
    r = run_py(code, NUMBA_CACHE_DIR=str(tmp_path / "unused"))
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.splitlines()[0] == "False no writable folder: kernels compiled in each process"
