"""What a person reads: backtest progress and plots, `chain book`/`chain taker` output,
balances and JSON without float noise."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path

import pytest
from chain_fixtures import LocalChain
from kit.cli import run_main as _run
from rich.console import Console

from flashmm.cli.backtest import _setup_logging, progress_step
from flashmm.types import clean_floats
from flashmm.venues.sei.abi import ASK, op_place
from flashmm.venues.sei.book import BookClient
from flashmm.venues.sei.rpc import JsonRpc

pytest_plugins = ["chain_fixtures"]


def test_progress_moves_in_small_steps() -> None:
    assert progress_step(1_804) == 64
    assert progress_step(114_078) == 570
    assert progress_step(10_000_000) == 8192


def test_logs_print_above_the_progress_bar() -> None:
    from loguru import logger

    buf = io.StringIO()
    console = Console(file=buf, width=120, color_system=None)
    _setup_logging(quiet=False, console=console)
    try:
        logger.warning("ML breaker SEI/USDC: closed -> open: test")
    finally:
        logger.remove()
    assert "WARNING ML breaker SEI/USDC: closed -> open: test" in buf.getvalue()


def test_backtest_open_on_a_headless_machine_prints_path_and_hint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.setenv("FLASHMM_CACHE_DIR", str(tmp_path / "cache"))
    argv = ["backtest", "--no-progress", "--open", "--set", "model.enabled=false"]
    code, _, err = _run(argv, capsys)
    assert code == 0, err
    (plots,) = tmp_path.glob("runs/backtest-*/plots.html")
    assert f"plots: {plots.relative_to(tmp_path)}" in err
    assert f"python -m http.server -d {plots.parent.relative_to(tmp_path)} 8000" in err
    html = plots.read_text()
    assert "UTC time (2024-07-23)" in html and "hours since start" not in html
    assert ">15:44<" in html  # clock-time ticks on the time axes
    report = json.loads((plots.parent / "report.json").read_text())
    assert all(len(repr(v)) <= 18 for v in report.values() if isinstance(v, float))


def test_clean_floats_removes_binary_noise() -> None:
    assert clean_floats({"a": 0.1 + 0.2, "b": [1 / 3, 2], "c": "x"}) == {
        "a": 0.3,
        "b": [0.3333333333, 2],
        "c": "x",
    }


def test_chain_book_says_when_empty_and_taker_prints_prices(
    fast_chain: LocalChain, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dep = tmp_path / "deployment.json"
    fast_chain.dep.write(dep)
    code, out, _ = _run(["chain", "book", "--deployment", str(dep)], capsys)
    assert code == 0 and "the book is empty" in out

    async def place() -> None:
        rpc = JsonRpc(fast_chain.rpc_url)
        try:
            book = BookClient(rpc, fast_chain.dep.book)
            await book.requote(fast_chain.sender(rpc, "maker"), 1, [op_place(0, 7, ASK, 12345, 5)])
        finally:
            await rpc.aclose()

    asyncio.run(place())
    code, out, _ = _run(["chain", "book", "--deployment", str(dep)], capsys)
    assert code == 0 and "ask" in out and "1.2345" in out and "no bids" in out
    argv = ["chain", "taker", "--deployment", str(dep), "--dev-account", "taker"]
    code, out, err = _run([*argv, "--duration", "3", "--rate", "5", "--size", "1"], capsys)
    assert code == 0, err
    takes = [ln for ln in out.splitlines() if ln.startswith("take #")]
    assert takes and all("@ 1.2345 (1 lots at tick 12345)" in ln for ln in takes), out
