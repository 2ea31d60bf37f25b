"""Compiled FlashBook contracts: ABI and bytecode built by ``node contracts/compile.js``.

The JSON artifacts are committed so that Python needs no Solidity toolchain; a test
recompiles the sources and checks the committed files are up to date.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

CONTRACT_NAMES = ("FlashBook", "TestToken", "FeeToken")


@cache
def load_artifact(name: str) -> dict[str, Any]:
    """The artifact of contract ``name``: ``abi``, ``bytecode``, ``deployedBytecode``, compiler."""
    if name not in CONTRACT_NAMES:
        raise KeyError(f"unknown contract {name!r}; known: {', '.join(CONTRACT_NAMES)}")
    text = resources.files(__name__).joinpath(f"{name}.json").read_text(encoding="utf-8")
    artifact: dict[str, Any] = json.loads(text)
    return artifact
