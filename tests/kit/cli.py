"""Run ``flashmm`` in-process as a user would, for tests of its messages and exit codes."""

from __future__ import annotations

import pytest

from flashmm.cli import main


def run_main(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """``flashmm ARGV``: (exit code, stdout, stderr)."""
    try:
        main(argv)
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err
