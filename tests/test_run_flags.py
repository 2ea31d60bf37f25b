"""``flashmm run --duration/--speed``: finite numbers only, a one-line error otherwise."""

from __future__ import annotations

import pytest

from flashmm.cli import main


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--duration", "nan"),
        ("--duration", "inf"),
        ("--duration", "0"),
        ("--duration", "-1"),
        ("--speed", "nan"),
        ("--speed", "inf"),
        ("--speed", "-2"),
    ],
)
def test_bad_duration_or_speed_is_one_line_and_non_zero(
    flag: str, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["run", flag, value])
    assert exc.value.code not in (0, None)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and flag in err[0], err
    assert "Traceback" not in err[0]
