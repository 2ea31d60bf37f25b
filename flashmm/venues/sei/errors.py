"""Errors of the Sei venue. All derive from :class:`flashmm.venues.base.VenueError`."""

from __future__ import annotations

import contextlib

from flashmm.venues.base import VenueError


class RpcError(VenueError):
    """The node answered a JSON-RPC call with an error object."""

    def __init__(self, method: str, code: int, message: str, data: object = None) -> None:
        self.message = message
        self.data = data
        super().__init__(f"{method}: RPC error {code}: {message}")

    @property
    def revert_data(self) -> bytes | None:
        """Revert data carried by an execution error (eth_call / eth_estimateGas), if any."""
        data = self.data
        if isinstance(data, dict):
            data = data.get("data")
        if isinstance(data, str) and data.startswith("0x"):
            with contextlib.suppress(ValueError):
                return bytes.fromhex(data[2:])
        return None


class RpcTransportError(VenueError):
    """The node could not be reached or answered badly (timeout, HTTP 5xx, bad JSON)."""

    #: the index of the endpoint that answered so (JsonRpc with fallbacks), when known
    endpoint: int | None = None


class RpcHttpError(RpcTransportError):
    """The endpoint answered with an HTTP error status."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        super().__init__(message)


class BatchRefused(VenueError):
    """The endpoint does not take JSON-RPC batches (an error object or an HTTP 4xx for the
    whole batch). Nothing of the batch was executed as a batch; send the calls one by one."""


class ChainIdMismatch(VenueError):
    """The node serves a different chain than the configuration says. Nothing is signed."""


class TxReverted(VenueError):
    """A transaction was mined but reverted; ``reason`` is the decoded revert reason."""

    def __init__(self, tx_hash: str, reason: str) -> None:
        self.tx_hash = tx_hash
        self.reason = reason
        super().__init__(f"transaction {tx_hash} reverted: {reason}")


class TxDropped(VenueError):
    """A sent transaction never got a receipt and the node no longer knows it."""


class KeySourceError(VenueError):
    """No usable signing key (missing, unreadable, unsafe permissions, wrong passphrase)."""
