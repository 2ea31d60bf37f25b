"""Configuration of the Sei venue (embedded in FlashMM's main config as ``venue:``)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator


class SeiVenueSettings(BaseModel):
    """Where and how to trade on the FlashBook contract.

    Prices and sizes are the contract's ticks and lots: a market's on-chain tickValue and
    lotUnits must equal the MarketSpec's tick_size x lot_size x 10**quote_decimals and
    lot_size x 10**base_decimals (checked at start when specs are given).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    rpc_url: str = Field(
        description="HTTP JSON-RPC endpoint, e.g. https://evm-rpc-testnet.sei-apis.com"
    )
    ws_url: str | None = Field(
        default=None, description="WebSocket endpoint for eth_subscribe; None polls"
    )
    chain_id: int = Field(
        description="1328 testnet (atlantic-2), 1329 mainnet; checked before signing"
    )
    book_address: str = Field(description="FlashBook contract address")
    markets: dict[str, int] = Field(description="FlashMM market symbol -> on-chain market id")
    keystore: str | None = Field(
        default=None,
        description="encrypted keystore file (passphrase from FLASHMM_KEYSTORE_PASSWORD); "
        "None reads FLASHMM_PRIVATE_KEY",
    )
    max_fee_gwei: float = Field(default=100.0, gt=0, description="cap on maxFeePerGas")
    priority_fee_gwei: float | None = Field(default=None, ge=0)
    max_inflight_txs: int = Field(default=2, ge=1, le=16)
    receipt_timeout_s: float = Field(default=20.0, gt=0)
    gas_margin: float = Field(
        default=0.2, ge=0, le=2, description="gas limit = estimate x (1 + margin)"
    )
    log_poll_s: float = Field(
        default=0.5, gt=0, description="eth_getLogs poll period without ws_url"
    )
    rpc_timeout_s: float = Field(default=5.0, gt=0)

    @field_validator("book_address")
    @classmethod
    def _address(cls, v: str) -> str:
        if not (v.startswith("0x") and len(v) == 42):
            raise ValueError(f"must be a 0x-prefixed 20-byte address, was {v!r}")
        int(v, 16)
        return v

    @field_validator("markets")
    @classmethod
    def _markets(cls, v: dict[str, int]) -> dict[str, int]:
        if not v:
            raise ValueError("needs at least one market (symbol -> market id)")
        for sym, mid in v.items():
            if not 1 <= mid <= 0xFFFF:
                raise ValueError(f"market id of {sym} must be in 1..65535, was {mid}")
        return v
