"""The API's OpenAPI 3.1 document (served at ``/api/v1/openapi.json``) and its route table."""

from __future__ import annotations

from typing import Any

__all__ = ["API_VERSION", "CONTROL_ROUTES", "READ_ROUTES", "openapi_document"]

#: Version of the ``/api/v1`` schema; every answer carries it as ``api_version``.
API_VERSION = 1

#: POST route -> control command (the same names as the control socket's).
CONTROL_ROUTES = {
    "/api/v1/pause": "pause",
    "/api/v1/resume": "resume",
    "/api/v1/stop": "stop",
    "/api/v1/emergency-stop": "emergency_stop",
    "/api/v1/reset": "reset",
}

#: GET routes that need a read (or control) token, and what they return.
READ_ROUTES = {
    "/api/v1/status": "The full status (the same dict as `flashmm status --json`).",
    "/api/v1/positions": "Total P&L and, per market, position, P&L and fill count.",
    "/api/v1/orders": "Resting quotes per market and the number of live orders.",
    "/api/v1/fills": "Fills this process has seen after `since` (ns), oldest first "
    "(the first `limit`, or the newest `tail`).",
    "/api/v1/breakers": "Every circuit breaker: state, action, reason, since, trips.",
    "/api/v1/model": "Model breaker and per-market signal (direction, confidence, source).",
}

_CONTROL_HELP = {
    "pause": "Pull every quote and stop quoting.",
    "resume": "Quote again (refused while halted or a loss breaker is latched).",
    "stop": "Graceful shutdown: cancel all orders, flush the journal, exit.",
    "emergency_stop": "Kill switch: cancel all, flatten with taker orders, halt (latched).",
    "reset": 'Clear the halt and latched breakers; needs {"confirm": true}. Stays paused. '
    "A tripped loss limit counts again from the P&L now: the result's "
    "`day_start_pnl_usdc` / `peak_equity_usdc`.",
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _ok(schema: dict[str, Any], text: str = "OK") -> dict[str, Any]:
    return {"description": text, "content": {"application/json": {"schema": schema}}}


def _get(summary: str, responses: dict[str, Any], *, public: bool = True) -> dict[str, Any]:
    """A GET operation; a ``public`` one needs no token."""
    security: dict[str, Any] = {"security": []} if public else {}
    return {"get": {"summary": summary, **security, "responses": responses}}


def _package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("flashmm")
    except PackageNotFoundError:
        return "unknown"


def openapi_document() -> dict[str, Any]:
    """The OpenAPI document for every route the server registers."""
    err = _ok(_ref("Error"), "Error")
    auth_errors = {"401": err, "403": err}
    health = _ok(_ref("Health"))
    paths: dict[str, Any] = {
        "/": _get(
            "Read-only web page (markets, quotes, positions, P&L, fills).",
            {"200": {"description": "HTML", "content": {"text/html": {}}}},
        ),
        "/health": _get(
            "Liveness: answers while the event loop runs; no auth. Without a read token"
            " only live, ready, reason and last_event_age_s; with one the details too.",
            {"200": health},
        ),
        "/health/ready": _get(
            "Readiness: recovered, books synced, venue reachable (else 503 and a reason"
            " code); no auth, details with a read token as for /health.",
            {"200": health, "503": health},
        ),
        "/metrics": _get(
            "Prometheus metrics (read token unless api.metrics_public).",
            {"200": {"description": "text", "content": {"text/plain": {}}}},
            public=False,
        ),
        "/api/v1/openapi.json": _get("This document.", {"200": {"description": "OpenAPI 3.1"}}),
        "/api/v1/stream": _get(
            "WebSocket (subprotocol flashmm.v1; a browser may send its token as"
            " subprotocol bearer.<token>). First a hello message with the current"
            " snapshot, then snapshots at up to api.stream_hz and, in events messages"
            " (one per batch, every ~50 ms at most), every fill, order, breaker and"
            " state change in order. seq grows by one per message: a gap means loss."
            " A client that does not keep up is dropped (close code 1008 with the"
            " reason, then the connection is reset).",
            {
                "101": {
                    "description": "Switching protocols; messages are StreamMessage",
                    "content": {"application/json": {"schema": _ref("StreamMessage")}},
                },
                "400": err,
                **auth_errors,
                "503": err,
            },
            public=False,
        ),
    }
    for path, text in READ_ROUTES.items():
        paths[path] = _get(text, {"200": _ok(_ref("Envelope")), **auth_errors}, public=False)
        if path.endswith("/fills"):
            op = paths[path]["get"]
            op["parameters"] = [
                {"name": "since", "in": "query", "schema": {"type": "integer", "minimum": 0}},
                {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1}},
                {
                    "name": "tail",
                    "in": "query",
                    "description": "the newest N fills after `since` instead of the first N",
                    "schema": {"type": "integer", "minimum": 1},
                },
            ]
            op["responses"]["400"] = err
    for path, cmd in CONTROL_ROUTES.items():
        paths[path] = {
            "post": {
                "summary": _CONTROL_HELP[cmd] + " Needs the control token; journaled.",
                "requestBody": {
                    "required": False,
                    "content": {"application/json": {"schema": _ref("ControlArgs")}},
                },
                "responses": {
                    "200": _ok(_ref("ControlResponse")),
                    "409": _ok(_ref("ControlResponse"), "Refused (reason in error)"),
                    **auth_errors,
                    "408": err,
                    "413": err,
                    "429": err,
                },
            }
        }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "FlashMM bot API",
            "version": f"{API_VERSION}.0 (flashmm {_package_version()})",
            "description": "Status, control and live stream of one running FlashMM bot.",
        },
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Envelope": {
                    "type": "object",
                    "required": ["api_version", "data"],
                    "properties": {"api_version": {"const": API_VERSION}, "data": {}},
                },
                "Error": {
                    "type": "object",
                    "properties": {"api_version": {"type": "integer"}, "error": {"type": "string"}},
                },
                "ControlArgs": {
                    "type": "object",
                    "properties": {"reason": {"type": "string"}, "confirm": {"type": "boolean"}},
                },
                "ControlResponse": {
                    "type": "object",
                    "properties": {
                        "api_version": {"type": "integer"},
                        "ok": {"type": "boolean"},
                        "result": {"type": "object"},
                        "error": {"type": ["string", "null"]},
                    },
                },
                "Health": {
                    "type": "object",
                    "required": ["live", "ready", "reason", "last_event_age_s"],
                    "properties": {
                        "live": {"type": "boolean"},
                        "ready": {"type": "boolean"},
                        "reason": {
                            "enum": ["starting", "books_not_synced", "venue_unreachable", None],
                            "description": "why not ready (null when ready)",
                        },
                        "last_event_age_s": {"type": "number"},
                        "state": {"type": "string", "description": "with a read token"},
                        "books_synced": {"type": "object", "description": "with a read token"},
                        "venue_reachable": {"type": "boolean", "description": "with a read token"},
                        "stream": {"type": "object", "description": "with a read token"},
                        "connections": {
                            "type": "object",
                            "description": "with a read token: open, max, idle_closed, refused",
                        },
                        "journal_error": {
                            "type": ["string", "null"],
                            "description": "with a read token",
                        },
                    },
                },
                "StreamMessage": {
                    "type": "object",
                    "required": ["seq", "type", "ts_ns", "data"],
                    "properties": {
                        "seq": {"type": "integer"},
                        "type": {"enum": ["hello", "snapshot", "events"]},
                        "ts_ns": {"type": "integer"},
                        "data": {
                            "description": "hello: {api_version, snapshot}; snapshot: the"
                            " status; events: [{type: fill|order|breaker|state|feed, data}]"
                        },
                    },
                },
            },
        },
    }
