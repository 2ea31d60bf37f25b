"""The opt-in HTTP API of a running bot: status, control, live stream, metrics, web page.

Started by :class:`flashmm.ops.service.OpsServices` when ``api.enabled`` is
set, on the engine's event loop but off its hot path: it reads the same
status dict as ``flashmm status --json``, runs commands through the same
:meth:`ControlServer.execute` as the control socket (journaled with their
source), and gets the engine's events from the operations loop, which hands
it each batch it drains from ``engine.outbox``. The stream's clients are
served by a fan-out process of their own (:mod:`flashmm.api.stream`): this
loop takes the WebSocket upgrade and hands the connection over.

Routes (``/api/v1`` is version 1 of one schema, see ``/api/v1/openapi.json``):

* ``GET /health`` (liveness) and ``GET /health/ready`` (readiness), no auth (the
  details, with client addresses and error texts, only with a read token);
* ``GET /api/v1/{status,positions,orders,fills,breakers,model}``: read token;
* ``POST /api/v1/{pause,resume,stop,emergency-stop,reset}``: control token,
  rate-limited per client;
* ``GET /api/v1/stream``: WebSocket of numbered snapshots and events;
* ``GET /metrics``: Prometheus text (read token unless ``api.metrics_public``);
* ``GET /``: the read-only web page.

At most ``api.max_connections`` HTTP connections are open at once (the one idle
the longest makes room for a new one; 503 when all are in a request), and a
connection without a whole request ``api.idle_timeout_s`` after it opened or
after its last answer is closed.

Tokens come from the environment: ``FLASHMM_API_TOKEN`` (control, also
reads) and ``FLASHMM_API_READ_TOKEN`` (reads only), sent as
``Authorization: Bearer <token>`` or, from a browser's WebSocket, as the
subprotocol ``bearer.<token>``. Without any token the API serves reads on a
loopback address only and refuses control; it refuses to start on any other
address.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hmac
import ipaddress
import math
import os
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from importlib import resources
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import orjson
from aiohttp import web
from loguru import logger

from flashmm.api.openapi import API_VERSION, CONTROL_ROUTES, openapi_document
from flashmm.api.stream import StreamHub, dumps, websocket_accept
from flashmm.config import ApiConfig
from flashmm.errors import RuntimeFailure
from flashmm.events import OutboxEvent
from flashmm.snapshot import OrderView, Snapshot, fill_dict

if TYPE_CHECKING:
    from flashmm.ops.service import OpsServices

__all__ = ["READ_TOKEN_ENV", "TOKEN_ENV", "ApiServer", "is_loopback"]

TOKEN_ENV = "FLASHMM_API_TOKEN"
READ_TOKEN_ENV = "FLASHMM_API_READ_TOKEN"
SUBPROTOCOL = "flashmm.v1"
_FILL_RING = 10_000
_READ, _CONTROL = "read", "control"
#: clients the control rate limit remembers before it forgets the idle ones
_RATE_CLIENTS = 10_000

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _host_name(value: str, *, origin: bool = False) -> str:
    """The host name of a ``Host`` header (or of an ``Origin``), lower case; "" if none."""
    try:
        return urlsplit(value if origin else f"//{value}").hostname or ""
    except ValueError:
        return ""


def _json(obj: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(
        body=dumps(obj), status=status, content_type="application/json", headers=headers
    )


def _error(status: int, message: str, headers: Mapping[str, str] | None = None) -> web.Response:
    return _json({"api_version": API_VERSION, "error": message}, status, headers)


async def _no_server_header(request: web.Request, response: web.StreamResponse) -> None:
    """No ``Server: Python/3.x aiohttp/3.x`` on a port a proxy may publish."""
    response.headers.pop("Server", None)


class _RateLimit:
    """At most ``per_minute`` requests per client in any 60 s window."""

    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self._hits: dict[str, deque[float]] = {}

    def retry_after(self, client: str, now: float) -> float:
        """0 when allowed (and counted), else seconds until the next slot."""
        hits = self._hits.setdefault(client, deque())
        while hits and now - hits[0] >= 60.0:
            hits.popleft()
        if len(hits) >= self.per_minute:
            return max(0.001, 60.0 - (now - hits[0]))
        hits.append(now)
        if len(self._hits) > _RATE_CLIENTS:  # forget clients with no request in the window
            for k in [k for k, v in self._hits.items() if not v or now - v[-1] >= 60.0]:
                del self._hits[k]
        return 0.0


class _Refused(asyncio.Protocol):
    """A connection over ``api.max_connections`` while every open one is in a request:
    503 and closed at once."""

    def __init__(self, limit: int) -> None:
        body = dumps(
            {
                "api_version": API_VERSION,
                "error": f"too many connections (api.max_connections {limit})",
            }
        )
        self.answer = (
            b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
            b"Connection: close\r\nContent-Length: %d\r\n\r\n%b" % (len(body), body)
        )

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.WriteTransport)
        transport.write(self.answer)
        transport.close()


class _Handler(web.RequestHandler):
    """aiohttp's handler of one connection, telling :class:`_Connections` when it ends."""

    def __init__(self, connections: _Connections, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.connections = connections
        #: closed to make room before it was connected: closed as soon as it is
        self.evicted = False

    def evict(self) -> None:
        self.evicted = True
        if self.transport is not None:
            self.force_close()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if self.evicted:
            self.force_close()

    def connection_lost(self, exc: BaseException | None) -> None:
        self.connections.closed(self)
        super().connection_lost(exc)


class _Connections:
    """At most ``limit`` HTTP connections at once: the protocol factory of the listening
    socket, so a connection is counted from the moment it is accepted.

    At the limit, the open connection idle the longest (between requests on
    keep-alive, or still without a whole request) is closed to make room: idle
    clients cannot keep the operator out. When every open connection is in a
    request, the new one gets 503 and is closed at once. Stream clients leave the
    count when their connection goes over to the fan-out process
    (``api.max_clients`` bounds those).
    """

    def __init__(self, server: web.Server, limit: int, **handler_kwargs: Any) -> None:
        self.server = server
        self.limit = limit
        self._kwargs = handler_kwargs
        #: open connections -> since when idle (monotonic: opened, or its last request ended)
        self._idle_since: dict[_Handler, float] = {}
        #: connections in a request (between the middleware's start and end)
        self.busy: set[web.RequestHandler] = set()
        self.refused = 0
        self.idle_closed = 0
        self._warned = -math.inf

    @property
    def open(self) -> int:
        return len(self._idle_since)

    def __call__(self) -> asyncio.Protocol:
        now = time.monotonic()
        if len(self._idle_since) >= self.limit:
            # connections accepted all at once are not connected yet: they count too
            idle = [(since, h) for h, since in self._idle_since.items() if h not in self.busy]
            if idle:
                victim = min(idle, key=lambda pair: pair[0])[1]
                del self._idle_since[victim]
                victim.evict()
                self.idle_closed += 1
            else:
                self.refused += 1
                self._warn(now)
                return _Refused(self.limit)
            self._warn(now)
        handler = _Handler(
            self, manager=self.server, loop=asyncio.get_running_loop(), **self._kwargs
        )
        self._idle_since[handler] = now
        return handler

    def _warn(self, now: float) -> None:
        if now - self._warned >= 60.0:  # once a minute at most
            self._warned = now
            logger.warning(
                "API: {} connections open (api.max_connections): {} idle one(s) closed,"
                " {} new one(s) refused so far",
                self.limit,
                self.idle_closed,
                self.refused,
            )

    def closed(self, handler: _Handler) -> None:
        self._idle_since.pop(handler, None)
        self.busy.discard(handler)

    def request_started(self, handler: web.RequestHandler) -> None:
        self.busy.add(handler)

    def request_done(self, handler: web.RequestHandler) -> None:
        self.busy.discard(handler)
        if isinstance(handler, _Handler) and handler in self._idle_since:
            self._idle_since[handler] = time.monotonic()

    def counts(self) -> dict[str, int]:
        return {
            "open": self.open,
            "max": self.limit,
            "idle_closed": self.idle_closed,
            "refused": self.refused,
        }


class _Site(web.BaseSite):
    """A TCP site whose connections come from :class:`_Connections`."""

    def __init__(
        self, runner: web.BaseRunner, host: str, port: int, factory: _Connections, backlog: int
    ) -> None:
        super().__init__(runner, backlog=backlog)
        self.host, self.port, self.factory = host, port, factory

    @property
    def name(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> None:
        await super().start()
        self._server = await asyncio.get_running_loop().create_server(
            self.factory, self.host, self.port, backlog=self._backlog
        )


#: what ``/api/v1/positions`` shows of each market
_POSITION_KEYS = (
    "position_lots",
    "position",
    "position_usdc",
    "limit_usage",
    "avg_price",
    "mid",
    "realized_usdc",
    "unrealized_usdc",
    "fees_usdc",
    "pnl_usdc",
    "fills",
    "volume_usdc",
)


class ApiServer:
    """aiohttp server for one bot (see the module docstring)."""

    def __init__(
        self, cfg: ApiConfig, ops: OpsServices, env: Mapping[str, str] | None = None
    ) -> None:
        env = os.environ if env is None else env
        self.cfg = cfg
        self.ops = ops
        self.control_token = (env.get(TOKEN_ENV) or "").encode()
        self.read_token = (env.get(READ_TOKEN_ENV) or "").encode()
        self.hub = StreamHub(cfg.stream_queue, cfg.max_clients)
        self.fills: deque[dict[str, Any]] = deque(maxlen=_FILL_RING)
        self.port: int | None = None
        self.rate = _RateLimit(cfg.control_per_minute)
        self._runner: web.AppRunner | None = None
        #: the open HTTP connections and their bound (set when the API starts)
        self.connections: _Connections | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._events_seen = -1
        self._last_event_wall = time.time()
        self._metrics: Any = None
        self._lat_seen = 0

    # --- lifecycle ------------------------------------------------------------

    def check_security(self) -> None:
        """Refuse a token under 16 characters, and a non-loopback address without any
        token (raises RuntimeFailure). Loopback too: a proxy may publish it."""
        for name, tok in ((TOKEN_ENV, self.control_token), (READ_TOKEN_ENV, self.read_token)):
            if tok and len(tok) < 16:
                raise RuntimeFailure(f"{name} is shorter than 16 characters")
        if self.read_token and hmac.compare_digest(self.read_token, self.control_token):
            # whoever was given the read token could then pause, reset and flatten
            raise RuntimeFailure(f"{READ_TOKEN_ENV} equals {TOKEN_ENV}: give readers their own")
        if is_loopback(self.cfg.host):
            return
        if not self.control_token and not self.read_token:
            raise RuntimeFailure(
                f"api.host {self.cfg.host} is not a loopback address and no token is set:"
                f" set {TOKEN_ENV} (and optionally {READ_TOKEN_ENV}), or bind 127.0.0.1"
            )

    def app(self) -> web.Application:
        app = web.Application(
            client_max_size=self.cfg.max_body_bytes, middlewares=[self._middleware]
        )
        app.on_response_prepare.append(_no_server_header)
        r = app.router
        r.add_get("/", self._page)
        r.add_get("/health", self._health)
        r.add_get("/health/ready", self._ready)
        r.add_get("/metrics", self._metrics_route)
        r.add_get("/api/v1/openapi.json", self._openapi)
        r.add_get("/api/v1/status", self._read(lambda: self._snap().to_dict()))
        r.add_get("/api/v1/positions", self._read(self.positions))
        r.add_get("/api/v1/orders", self._read(self.orders))
        r.add_get("/api/v1/breakers", self._read(lambda: self._snap().to_dict()["breakers"]))
        r.add_get("/api/v1/model", self._read(self.model))
        r.add_get("/api/v1/fills", self._fills)
        r.add_get("/api/v1/stream", self._stream)
        for path, cmd in CONTROL_ROUTES.items():
            r.add_post(path, self._control(cmd))
        return app

    async def start(self) -> None:
        self.check_security()
        # keepalive_timeout: aiohttp closes a connection that has no whole request this
        # long after it opened or after its last answer (idle keep-alive, slowloris)
        handler_kwargs: dict[str, Any] = {
            "access_log": None,
            "keepalive_timeout": self.cfg.idle_timeout_s,
        }
        self._runner = web.AppRunner(self.app(), handle_signals=False, **handler_kwargs)
        await self._runner.setup()
        assert self._runner.server is not None
        self.connections = _Connections(
            self._runner.server, self.cfg.max_connections, **handler_kwargs
        )
        site = _Site(self._runner, self.cfg.host, self.cfg.port, self.connections, backlog=512)
        try:
            await site.start()
        except OSError as exc:
            await self._runner.cleanup()
            self._runner = None
            raise RuntimeFailure(
                f"cannot serve the API on {self.cfg.host}:{self.cfg.port}: {exc}"
            ) from exc
        addrs = self._runner.addresses
        self.port = int(addrs[0][1]) if addrs else self.cfg.port
        self.hub.start()
        self._ticker = asyncio.create_task(self._tick(), name="api-stream")
        self.ops.listeners.append(self.on_events)
        auth = "control+read tokens" if self.control_token else "no control token"
        logger.info("API on http://{}:{}/ ({})", self.cfg.host, self.port, auth)

    async def aclose(self) -> None:
        with contextlib.suppress(ValueError):
            self.ops.listeners.remove(self.on_events)
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(BaseException):
                await self._ticker
            self._ticker = None
        await self.hub.aclose()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # --- data -------------------------------------------------------------------

    def _snap(self) -> Snapshot:
        """A fresh snapshot for an answer (the stream shares the operations' latest)."""
        return self.ops.publish()

    def _part(self, top: str, *keys: str) -> dict[str, Any]:
        """``top`` of the status and ``keys`` of each market (its one schema)."""
        st = self._snap().to_dict()
        markets = {sym: {k: m[k] for k in keys} for sym, m in st["markets"].items()}
        return {top: st[top], "markets": markets}

    def positions(self) -> dict[str, Any]:
        return self._part("pnl_usdc", *_POSITION_KEYS)

    def orders(self) -> dict[str, Any]:
        out = self._part("live_orders", "quotes")
        return {**out, "markets": {sym: m["quotes"] for sym, m in out["markets"].items()}}

    def model(self) -> dict[str, Any]:
        return self._part("model", "signal", "signal_status")

    def health(self, detail: bool = True) -> dict[str, Any]:
        """Liveness and readiness; with ``detail`` (a read token) also why and the counters.

        Without it: ``live``, ``ready``, ``reason`` (a code, None when ready) and
        ``last_event_age_s``: what a load balancer or a container check needs, and no
        client address, market or error text.
        """
        snap = self.ops.current(1.0 / self.cfg.stream_hz)
        books = {sym: m.synced for sym, m in snap.markets.items()}
        venue_b = snap.breakers.get("venue_errors")
        venue_ok = venue_b is None or venue_b.get("state") != "tripped"
        reason = (
            "starting"  # recovering from the journal, reconciling with the venue
            if not self.ops.ready
            else "books_not_synced"
            if not all(books.values())
            else "venue_unreachable"
            if not venue_ok
            else None
        )
        public = {
            "live": True,
            "ready": reason is None,
            "reason": reason,
            "last_event_age_s": round(time.time() - self._last_event_wall, 3),
        }
        if not detail:
            return public
        return {
            **public,
            "state": snap.state,
            "books_synced": books,
            "venue_reachable": venue_ok,
            "stream": {
                "clients": self.hub.clients,
                "seq": self.hub.seq,
                "published": self.hub.published,
                "lost": self.hub.lost,
                "dropped_clients": self.hub.drops,
                "last_drop": self.hub.last_drop or None,
            },
            "journal_error": (
                str(self.ops.journal.error)
                if self.ops.journal is not None and self.ops.journal.error is not None
                else None
            ),
            "connections": self.connections.counts() if self.connections is not None else None,
        }

    # --- events from the operations loop ------------------------------------------

    def on_events(self, batch: Sequence[OutboxEvent]) -> None:
        """Called by the operations loop with what it drained from the engine's outbox.

        One stream message per batch (``type: events``, ``data``: the events in
        order, each ``{"type": "fill"|"order"|"breaker"|"state"|"feed"|"hold", "data"}``):
        every event goes out, in at most ~20 frames a second per client.
        """
        events: list[dict[str, Any]] = []
        specs = self.ops.engine.specs
        for kind, payload in batch:
            try:
                if kind == "fill":
                    d = fill_dict(payload, specs.get(payload.market))
                    self.fills.append(d)
                    events.append({"type": "fill", "data": d})
                elif kind in ("order", "order_update", "order_done"):
                    order, note = (payload, "new") if kind == "order" else payload
                    spec = specs.get(order.market)
                    if spec is not None:
                        o = dataclasses.asdict(OrderView.of(order, spec, str(note)))
                        events.append({"type": "order", "data": o})
                elif kind in ("breaker", "state", "feed", "hold"):
                    data = dict(payload) if isinstance(payload, Mapping) else payload
                    events.append({"type": kind, "data": data})
            except Exception:
                logger.exception("API stream: cannot publish a {} event", kind)
        if events:
            self.hub.publish("events", events)

    async def _tick(self) -> None:
        """Snapshots at ``stream_hz`` (the operations' latest, shared)."""
        period = 1.0 / self.cfg.stream_hz
        while True:
            await asyncio.sleep(period)
            try:
                snap = self.ops.current(period)
                if snap.events != self._events_seen:
                    self._events_seen = snap.events
                    self._last_event_wall = time.time()
                if self.hub.clients:
                    self.hub.publish("snapshot", snap.to_dict())
            except Exception:
                logger.exception("API stream tick failed (continuing)")

    # --- auth -------------------------------------------------------------------

    def _token_kind(self, token: bytes | None) -> str | None:
        """``control``, ``read`` or None; both comparisons always run (constant time)."""
        if not token:
            return None
        is_control = bool(self.control_token) & hmac.compare_digest(
            token, self.control_token or b"\0"
        )
        is_read = bool(self.read_token) & hmac.compare_digest(token, self.read_token or b"\0")
        return _CONTROL if is_control else _READ if is_read else None

    @staticmethod
    def _request_token(request: web.Request) -> bytes | None:
        # header bytes that are not UTF-8 come as surrogates: back to those bytes (a wrong
        # token, not an error)
        auth = request.headers.get("Authorization", "")
        if auth[:7].lower() == "bearer ":
            return auth[7:].strip().encode("utf-8", "surrogateescape")
        for proto in request.headers.get("Sec-WebSocket-Protocol", "").split(","):
            proto = proto.strip()
            if proto.startswith("bearer."):
                return proto[7:].encode("utf-8", "surrogateescape")
        return None

    def _authorize(self, request: web.Request, need: str) -> web.Response | str:
        """The token kind granted, or the error response."""
        token = self._request_token(request)
        kind = self._token_kind(token)
        if need == _READ and not self.control_token and not self.read_token:
            # loopback only (checked at start), and only by a loopback name: a page of
            # another site that had its name point at 127.0.0.1 (DNS rebinding) reads nothing
            if not is_loopback(_host_name(request.headers.get("Host", ""))):
                return _error(
                    403,
                    "without a token the API answers only requests to a loopback name"
                    f" (127.0.0.1, localhost, [::1]); set {READ_TOKEN_ENV} to use another",
                )
            return kind or "open"
        challenge = {"WWW-Authenticate": 'Bearer realm="flashmm"'}
        if token is None:
            return _error(401, "missing bearer token", challenge)
        if kind is None:
            return _error(401, "invalid token", challenge)
        if need == _CONTROL and kind != _CONTROL:
            return _error(403, "this token is read-only; control needs " + TOKEN_ENV)
        return kind

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        conns, conn = self.connections, request.protocol
        if conns is not None:
            conns.request_started(conn)
        try:
            return await self._handle(request, handler)
        finally:
            if conns is not None:
                conns.request_done(conn)

    async def _handle(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        length = request.content_length
        if length is not None and length > self.cfg.max_body_bytes:
            return _error(413, f"request body over {self.cfg.max_body_bytes} bytes")
        try:
            return await handler(request)
        except web.HTTPRequestEntityTooLarge:
            return _error(413, f"request body over {self.cfg.max_body_bytes} bytes")
        except web.HTTPMethodNotAllowed as exc:  # the error body clients parse, not text
            allow = ", ".join(sorted(exc.allowed_methods))
            return _error(
                405, f"{exc.method} not allowed here (allowed: {allow})", {"Allow": allow}
            )
        except web.HTTPNotFound:
            return _error(404, f"no route {request.path} (see /api/v1/openapi.json)")

    # --- routes -----------------------------------------------------------------

    def _read(self, fn: Callable[[], Any]) -> Handler:
        async def handler(request: web.Request) -> web.StreamResponse:
            granted = self._authorize(request, _READ)
            if isinstance(granted, web.Response):
                return granted
            return _json({"api_version": API_VERSION, "data": fn()})

        return handler

    async def _fills(self, request: web.Request) -> web.StreamResponse:
        granted = self._authorize(request, _READ)
        if isinstance(granted, web.Response):
            return granted
        try:
            since = int(request.query.get("since", "0"))
            limit = int(request.query.get("limit", "1000"))
            tail = int(request.query["tail"]) if "tail" in request.query else None
        except ValueError:
            return _error(400, "since, limit and tail must be integers (since: ns since the epoch)")
        after = [f for f in self.fills if f["ts_ns"] > since]
        if tail is not None:  # the newest ``tail`` fills, still oldest first
            out = after[-max(1, min(tail, _FILL_RING)) :]
        else:
            n = max(1, min(limit, _FILL_RING))
            # a page ends between two timestamps: ``since`` is exclusive, so fills sharing
            # the last one's ts_ns (levels filled by one take) would be skipped by the next
            while n < len(after) and after[n]["ts_ns"] == after[n - 1]["ts_ns"]:
                n += 1
            out = after[:n]
        return _json({"api_version": API_VERSION, "data": {"since": since, "fills": out}})

    def _control(self, cmd: str) -> Handler:
        async def handler(request: web.Request) -> web.StreamResponse:
            client = request.remote or "?"
            granted = self._authorize(request, _CONTROL)
            # refused requests count apart: requests without the control token (behind a
            # proxy, all from its address) cannot use up the operator's control requests
            refused = isinstance(granted, web.Response)
            wait = self.rate.retry_after(
                f"{client} refused" if refused else client, time.monotonic()
            )
            if wait:
                return _error(
                    429,
                    f"too many control requests (limit {self.cfg.control_per_minute}/min)",
                    {"Retry-After": str(int(wait) + 1)},
                )
            if isinstance(granted, web.Response):
                logger.warning("API: {} from {} refused ({})", cmd, client, granted.status)
                return granted
            args: Any = {}
            if request.can_read_body:
                try:
                    async with asyncio.timeout(self.cfg.idle_timeout_s):
                        body = await request.read()
                except TimeoutError:
                    return _error(
                        408,
                        f"request body not sent within {self.cfg.idle_timeout_s:g} s"
                        " (api.idle_timeout_s)",
                    )
                if body.strip():
                    try:
                        args = orjson.loads(body)
                    except orjson.JSONDecodeError:
                        args = None
                    if not isinstance(args, dict):
                        return _error(400, "body must be a JSON object")
            control = self.ops.control
            if control is None:
                return _error(503, "control is not available")
            response = await control.execute(cmd, args, source=f"http {client} ({granted} token)")
            status = 200 if response.get("ok") else 409
            return _json({"api_version": API_VERSION, **response}, status)

        return handler

    def _health_of(self, request: web.Request) -> dict[str, Any]:
        """The details with a read token (or where reads are open), else the public part:
        no token, or a wrong one, still gets an answer (a health check sends none)."""
        granted = self._authorize(request, _READ)
        return self.health(detail=not isinstance(granted, web.Response))

    async def _health(self, request: web.Request) -> web.StreamResponse:
        return _json(self._health_of(request))

    async def _ready(self, request: web.Request) -> web.StreamResponse:
        h = self._health_of(request)
        return _json(h, 200 if h["ready"] else 503)

    async def _openapi(self, request: web.Request) -> web.StreamResponse:
        return _json(openapi_document())

    async def _page(self, request: web.Request) -> web.StreamResponse:
        html = resources.files("flashmm.api").joinpath("static/index.html").read_bytes()
        return web.Response(
            body=html,
            content_type="text/html",
            headers={
                "Cache-Control": "no-store",
                "Content-Security-Policy": "default-src 'self'; script-src 'self' 'unsafe-inline';"
                " style-src 'self' 'unsafe-inline'; connect-src 'self'",
            },
        )

    async def _metrics_route(self, request: web.Request) -> web.StreamResponse:
        if not self.cfg.metrics_public:
            granted = self._authorize(request, _READ)
            if isinstance(granted, web.Response):
                return granted
        m = self.ops.metrics
        if m is None:
            if self._metrics is None:
                try:
                    from flashmm.ops.metrics import Metrics

                    self._metrics = Metrics(port=0)
                except RuntimeFailure as exc:
                    return _error(501, str(exc))
            m = self._metrics
            m.update(self._snap())
            self._lat_seen = m.observe_engine_latency(self.ops.engine, self._lat_seen)
        return web.Response(body=m.render(), content_type="text/plain", charset="utf-8")

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        # browsers let any page open a WebSocket anywhere, and send its origin along
        origin = request.headers.get("Origin")
        host = _host_name(request.headers.get("Host", ""))
        if origin is not None and (not host or _host_name(origin, origin=True) != host):
            return _error(403, "a WebSocket from a page of another site is refused (Origin)")
        granted = self._authorize(request, _READ)
        if isinstance(granted, web.Response):
            return granted
        accept, why = websocket_accept(request.headers, SUBPROTOCOL)
        if not accept:
            return _error(400, why)
        if self.hub.clients >= self.cfg.max_clients:
            return _error(503, f"too many stream clients (api.max_clients {self.cfg.max_clients})")
        transport = request.transport
        sock = transport.get_extra_info("socket") if transport is not None else None
        if transport is None or sock is None or transport.get_write_buffer_size():
            return _error(503, "the connection cannot be handed to the stream")
        hello = self.hub.hello({"api_version": API_VERSION, "snapshot": self._snap().to_dict()})
        # the fan-out process takes the connection over: it sends the handshake answer and
        # hello, then every message; this loop forgets the socket (its copy stays open there)
        if not self.hub.attach(sock, f"{request.remote}", accept + hello):
            return _error(503, "the stream is not available (fan-out process down or busy)")
        transport.pause_reading()
        transport.abort()
        return web.Response(status=101)
