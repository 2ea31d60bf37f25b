"""Binance spot endpoints: the defaults of the live feed and of ``flashmm feed record``.

A module of their own, without imports, so the CLI's start loads neither pydantic
(the feed settings) nor the parser's dataclasses to show a default.
"""

DEFAULT_WS_URL = "wss://stream.binance.com:9443"
DEFAULT_REST_URL = "https://api.binance.com"
