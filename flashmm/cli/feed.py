"""``flashmm feed``: serve recordings as a local Binance, record a live stream.

Heavy imports (websockets, aiohttp) happen inside the commands.
"""

from __future__ import annotations

import gzip
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from flashmm.feeds.endpoints import DEFAULT_REST_URL, DEFAULT_WS_URL

if TYPE_CHECKING:
    import asyncio

app = typer.Typer(help="Market-data feeds: a local replay server and a stream recorder.")


@app.command()
def serve(
    data: list[str] = typer.Option(
        ["bundled:nexo"],
        "--data",
        "-d",
        metavar="FILE",
        help="Recording to serve (repeat for more; bundled:NAME is one shipped with FlashMM)",
    ),
    host: str = typer.Option("127.0.0.1", help="Address to listen on"),
    port: int = typer.Option(9000, min=0, max=65535, help="WebSocket port (0 = any free port)"),
    http_port: int = typer.Option(
        9001, "--http-port", min=0, max=65535, help="REST port (0 = any free port)"
    ),
    speed: float = typer.Option(1.0, help="Replay speed: 1 = recorded pace, 0 = as fast as read"),
    loop: bool = typer.Option(False, "--loop", help="Start again at the end (clients reconnect)"),
    align: bool = typer.Option(True, help="Shift several symbols' recordings to start together"),
) -> None:
    """Replay recordings as a Binance combined stream + REST depth snapshots."""
    import asyncio
    import socket

    from flashmm.cli.chain import check_finite
    from flashmm.errors import FlashMMError, UserInputError
    from flashmm.stopsignals import install_signal_handlers

    check_finite(speed, "--speed", 0)
    if port and port == http_port:
        raise UserInputError(f"--http-port: {http_port} is --port too; give two ports (or 0)")
    from flashmm.logs import setup_logging

    setup_logging()  # the bot's log format (and its secret redaction), not loguru's default

    async def main() -> None:
        from flashmm.feeds.server import ReplayServer
        from flashmm.paths import resolve_path

        files = [resolve_path(d) for d in data]
        srv = ReplayServer(files, host, port, speed, http_port=http_port, loop=loop, align=align)
        await srv.start()
        typer.echo(f"symbols:  {', '.join(srv.symbols)}")
        typer.echo(f"ws_url:   {srv.ws_url}")
        typer.echo(f"rest_url: {srv.rest_url}")
        typer.echo("config:")
        typer.echo("  feed:")
        typer.echo("    kind: binance_ws")
        typer.echo(f"    ws_url: {srv.ws_url}")
        typer.echo(f"    rest_url: {srv.rest_url}")
        # SIGINT and SIGTERM stop the server cleanly, also when it was started in the
        # background of a script (which starts it with SIGINT ignored); a second one
        # half a second later exits at once
        stop = asyncio.Event()
        install_signal_handlers(stop, doing="stopping the replay server")
        typer.echo("Ctrl-C to stop.", err=True)
        try:
            if not loop:
                ended = asyncio.ensure_future(srv.finished.wait())
                await asyncio.wait(
                    {ended, asyncio.ensure_future(stop.wait())},
                    return_when=asyncio.FIRST_COMPLETED,
                )
                if ended.done():
                    typer.echo("end of data; still answering (Ctrl-C to stop)", err=True)
            await stop.wait()
        finally:
            await srv.stop()

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
    except socket.gaierror as exc:  # before anything is served
        raise UserInputError(f"--host: cannot resolve {host!r} ({exc.strerror})") from None
    except (FlashMMError, OSError) as exc:
        typer.echo(f"flashmm: error: {exc}", err=True)
        raise typer.Exit(exc.exit_code if isinstance(exc, FlashMMError) else 1) from None


def out_path(out: Path, symbol: str, several: bool) -> Path:
    """The file of ``symbol``: ``{symbol}`` in ``out`` is replaced; with several
    symbols and no placeholder the symbol goes before the ``.gz``/``.dat.gz`` suffix."""
    text = str(out)
    if "{symbol}" in text:
        return Path(text.replace("{symbol}", symbol))
    if not several:
        return out
    name = out.name
    for suffix in (".dat.gz", ".gz"):
        if name.endswith(suffix):
            return out.with_name(f"{name[: -len(suffix)]}_{symbol}{suffix}")
    return out.with_name(f"{name}_{symbol}.gz")


class Recorder:
    """Writes what a :class:`~flashmm.feeds.ws.BinanceWSFeed` passes on to
    ``<ts_us> <json>`` gzip files, one per symbol, each starting with a snapshot.

    Lines of a symbol that come before its first snapshot are kept back and
    written right after it (their timestamps are then a little older than
    the snapshot's). Later snapshots (after a gap or reconnect) are written
    where they are passed on, so the file replays without a gap.
    """

    def __init__(self, paths: dict[str, Path]) -> None:
        self.paths = paths
        self.files: dict[str, Any] = {}
        self.pending: dict[str, list[str]] = {s: [] for s in paths}
        self.lines: dict[str, int] = dict.fromkeys(paths, 0)
        for s, p in paths.items():
            p.parent.mkdir(parents=True, exist_ok=True)
            self.files[s] = gzip.open(p, "wt", encoding="utf-8")  # noqa: SIM115 - closed in close()

    def __call__(self, ev: Any, raw: str) -> None:
        from flashmm.marketdata import DepthSnapshot

        sym = ev.symbol
        fh = self.files.get(sym)
        if fh is None:
            return
        if "\n" in raw or "\r" in raw:
            raw = raw.replace("\r", "").replace("\n", "")  # whitespace only, in JSON
        line = f"{ev.ts_ns // 1000} {raw}\n"
        pending = self.pending.get(sym)
        if pending is not None:
            if not isinstance(ev, DepthSnapshot):
                pending.append(line)
                return
            fh.write(line)
            fh.writelines(pending)
            self.lines[sym] += 1 + len(pending)
            del self.pending[sym]
            return
        fh.write(line)
        self.lines[sym] += 1

    def close(self) -> None:
        for fh in self.files.values():
            fh.close()
        self.files.clear()


async def record_stream(
    symbols: list[str],
    out: Path,
    duration_s: float | None = None,
    *,
    ws_url: str = DEFAULT_WS_URL,
    rest_url: str = DEFAULT_REST_URL,
    depth_limit: int = 1000,
    stop: asyncio.Event | None = None,
    feed_options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Record ``symbols`` until ``duration_s`` passes or ``stop`` is set.

    Returns a summary: files, lines per symbol and the feed's stats.
    """
    import asyncio

    from flashmm.feeds.binance import Scale
    from flashmm.feeds.ws import BinanceWSFeed

    syms = [s.strip().lower() for s in symbols if s.strip()]
    if not syms:
        raise ValueError("no symbols to record")
    paths = {s: out_path(out, s, len(syms) > 1) for s in syms}
    rec = Recorder(paths)
    # the scale only matters for the events, not for what is written
    scales = {s: Scale(1e8, 1e8) for s in syms}
    feed = BinanceWSFeed(
        scales, ws_url, rest_url, depth_limit, raw_sink=rec, **(feed_options or {})
    )
    stop = stop or asyncio.Event()
    deadline = time.monotonic() + duration_s if duration_s else None

    async def consume() -> None:
        async for _ in feed:
            pass

    task = asyncio.create_task(consume())
    waiter = asyncio.create_task(stop.wait())
    try:
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        done, _ = await asyncio.wait(
            {task, waiter}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
        )
        if task in done:
            task.result()  # a sink error (disk full...) surfaces here
    finally:
        await feed.aclose()
        waiter.cancel()
        await asyncio.gather(task, waiter, return_exceptions=True)
        rec.close()
    return {
        "files": {s: str(p) for s, p in paths.items()},
        "lines": dict(rec.lines),
        "without_snapshot": sorted(rec.pending),
        "stats": feed.stats.as_dict(),
    }


@app.command()
def record(
    symbols: str = typer.Option(..., help="Comma-separated stream symbols: nexousdt,ethusdt"),
    out: Path = typer.Option(
        ..., help="Output .gz; with several symbols one file each ({symbol} placeholder)"
    ),
    duration: float | None = typer.Option(None, help="Seconds to record (default: until Ctrl-C)"),
    ws_url: str = typer.Option(DEFAULT_WS_URL, "--ws-url", help="Binance WebSocket endpoint"),
    rest_url: str = typer.Option(
        DEFAULT_REST_URL, "--rest-url", help="Binance REST endpoint (snapshots)"
    ),
    depth_limit: int = typer.Option(
        1000, "--depth-limit", min=1, max=5000, help="Levels in the REST snapshot"
    ),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing recording"),
) -> None:
    """Record a live combined stream to `<ts_us> <json>` gzip lines, snapshot first.

    Exits 1 (and keeps no empty file) when a symbol got no depth snapshot: nothing of
    it was recorded.
    """
    import asyncio

    from flashmm.cli.chain import check_finite, check_out, check_url
    from flashmm.errors import UserInputError

    syms = [s for s in symbols.split(",") if s.strip()]
    if not syms:
        raise UserInputError(f"--symbols: no symbol in {symbols!r} (e.g. nexousdt,ethusdt)")
    if duration is not None:
        check_finite(duration, "--duration", 0, above=True)
    check_url(ws_url, "--ws-url", ("ws", "wss"))
    check_url(rest_url, "--rest-url", ("http", "https"))
    for sym in syms:  # a folder or an unwritable place fails before the stream is opened
        path = check_out(out_path(out, sym.strip().lower(), len(syms) > 1))
        if not force and path.is_file() and path.stat().st_size > 0:
            raise UserInputError(
                f"--out: {path} exists (a recording is not overwritten); give another path"
                " or --force"
            )
    from flashmm.logs import setup_logging

    setup_logging()
    try:
        summary = asyncio.run(
            record_stream(
                syms, out, duration, ws_url=ws_url, rest_url=rest_url, depth_limit=depth_limit
            )
        )
    except KeyboardInterrupt:
        typer.echo("stopped", err=True)
        return
    except (ValueError, OSError) as exc:
        typer.echo(f"flashmm: error: {exc}", err=True)
        raise typer.Exit(2) from None
    empty = summary["without_snapshot"]
    for s, file in summary["files"].items():
        if s in empty:
            Path(file).unlink(missing_ok=True)  # nothing of it was recorded
            typer.echo(f"{s}: nothing recorded (no depth snapshot received)")
        else:
            typer.echo(f"{s}: {summary['lines'][s]} lines -> {file}")
    st = summary["stats"]
    typer.echo(
        f"messages {st['messages']}, bad {st['bad_messages']}, gaps {st['gaps']}, "
        f"reconnects {st['reconnects']}"
    )
    if empty:
        typer.echo(
            f"flashmm: error: no depth snapshot for {', '.join(empty)}: is {rest_url}"
            f" (--rest-url) reachable and {ws_url} (--ws-url) streaming?",
            err=True,
        )
        raise typer.Exit(1)


if __name__ == "__main__":  # pragma: no cover
    app()
