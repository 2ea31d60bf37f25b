"""The market-data feed's settings (the profile's ``feed:`` section)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from flashmm.feeds.endpoints import DEFAULT_REST_URL, DEFAULT_WS_URL


class FeedConfig(BaseModel):
    """The ``feed:`` section: recordings to replay, or the live Binance stream."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["replay", "binance_ws"] = "replay"
    files: list[str] = Field(
        default_factory=list,
        description="Recordings to replay; 'bundled:NAME' is a file shipped with FlashMM",
    )
    speed: float = Field(
        1.0, ge=0, description="Replay speed: 1 = real time, 0 = as fast as possible"
    )
    loop: bool = Field(False, description="Start the recording again when it ends")
    align: bool = Field(True, description="Shift each symbol's recording to start together")
    ws_url: str = DEFAULT_WS_URL
    rest_url: str = DEFAULT_REST_URL
    futures: bool = Field(
        False,
        description="USD-M futures (ws_url wss://fstream.binance.com, rest_url "
        "https://fapi.binance.com): snapshots from /fapi/v1/depth, the futures sequencing rule",
    )
