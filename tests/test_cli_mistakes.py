"""User mistakes on the chain, wallet, feed and operator commands: one line naming the
option or file, exit 2, no traceback, and nothing sent before the input is known good."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from chain_fixtures import LocalChain
from kit.cli import run_main as _run

from flashmm.cli.chain import MAX_QUOTE_UNITS, check_address, token_units
from flashmm.errors import UserInputError

pytest_plugins = ["chain_fixtures"]

ROOT = Path(__file__).resolve().parents[1]
#: nothing listens here: a command that connected would fail with exit 1, not 2
DEAD_RPC = "http://127.0.0.1:1"
TAKER = "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"  # anvil dev account 2


def _refused(argv: list[str], capsys: pytest.CaptureFixture[str], *names: str) -> str:
    """Run ``argv``; it must exit 2 with one ``flashmm: error:`` line naming ``names``."""
    code, _, err = _run(argv, capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert lines[0].startswith("flashmm: error: ") and "Traceback" not in err, err
    for name in names:
        assert name in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def dep_file(tmp_path: Path) -> Path:
    """A deployment file whose node is never reached (nothing listens on its RPC)."""
    key = "0x" + "11" * 32
    dep = {
        "chain_id": 1328,
        "rpc_url": DEAD_RPC,
        "ws_url": "ws://127.0.0.1:1",
        "book": "0x" + "00" * 19 + "01",
        "tokens": {
            "SEI": {"address": "0x" + "00" * 19 + "02", "decimals": 18, "mintable": True},
            "USDC": {"address": "0x" + "00" * 19 + "03", "decimals": 6, "mintable": False},
        },
        "markets": {
            "SEI/USDC": {
                "id": 1,
                "base": "SEI",
                "quote": "USDC",
                "tick_size": "0.0001",
                "lot_size": "1",
            },
            "ETH/USDC": {
                "id": 2,
                "base": "SEI",
                "quote": "USDC",
                "tick_size": "0.01",
                "lot_size": "0.001",
            },
        },
        "accounts": {"taker": {"address": TAKER, "private_key": key}},
    }
    path = tmp_path / "dep.json"
    path.write_text(json.dumps(dep))
    return path


@pytest.fixture(autouse=True)
def _no_key(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("FLASHMM_PRIVATE_KEY", raising=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))  # no bot's socket is found


# --- chain book / taker / deposit / withdraw: checked before any connection ---------------


@pytest.mark.parametrize("command", ["book", "taker", "deposit", "withdraw"])
def test_an_unknown_market_is_named_with_the_known_ones(
    command: str, dep_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """book raised KeyError; taker exited 1 and withdraw 2 for the same mistake."""
    argv = ["chain", command, "--deployment", str(dep_file), "--market", "FOO/USDC"]
    if command in ("deposit", "withdraw"):
        argv += ["--quote", "1", "--dev-account", "taker"]
    line = _refused(argv, capsys, "--market", "'FOO/USDC'")
    assert "known: SEI/USDC, ETH/USDC" in line


@pytest.mark.parametrize("command", ["deposit", "withdraw"])
@pytest.mark.parametrize(
    ("option", "value", "why"),
    [
        ("--base", "abc", "is not a decimal number"),  # was decimal.InvalidOperation
        ("--base", "-5", "must not be negative"),  # was eth_abi ValueOutOfBounds
        ("--quote", "-0.5", "must not be negative"),
        ("--quote", "1e400", "more than a FlashBook account holds"),  # ValueOutOfBounds
        ("--base", "1e99999999999", "more than a FlashBook account holds"),
        ("--base", "1e9999999999999999999", "too large or too small an exponent"),
        ("--quote", "nan", "finite"),  # was ValueError: cannot convert NaN
        ("--base", "Infinity", "finite"),
        ("--quote", "0.0000001", "more decimals than USDC has (6)"),  # silently rounded
        ("--base", "1e-19", "more decimals than SEI has (18)"),
    ],
)
def test_amounts_are_checked_before_any_connection(
    command: str,
    option: str,
    value: str,
    why: str,
    dep_file: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["chain", command, "--deployment", str(dep_file), "--market", "SEI/USDC"]
    _refused([*argv, "--dev-account", "taker", option, value], capsys, option, why)


@pytest.mark.parametrize("command", ["deposit", "withdraw"])
def test_nothing_to_move_is_refused(
    command: str, dep_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Both amounts 0 (the defaults) reverted on chain with BadAmount() after the approvals."""
    argv = ["chain", command, "--deployment", str(dep_file), "--market", "SEI/USDC"]
    _refused([*argv, "--dev-account", "taker", "--base", "0"], capsys, "--base", "--quote")


def test_mint_with_no_test_token_to_mint_is_refused(
    dep_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """USDC here is a real token (mintable false): --mint with only --quote mints nothing."""
    argv = ["chain", "deposit", "--deployment", str(dep_file), "--market", "SEI/USDC"]
    _refused([*argv, "--dev-account", "taker", "--quote", "5", "--mint"], capsys, "--mint", "USDC")


def test_token_units_are_exact() -> None:
    assert token_units("1.5", 18) == 15 * 10**17
    assert token_units("0.000001", 6) == 1
    assert token_units("2.500000000", 6) == 2_500_000  # trailing zeros are no decimals
    assert token_units("1e3", 6) == 10**9
    assert token_units("0", 6) == token_units("-0", 6) == 0
    # more digits than Decimal's default 28: no rounding
    long = "123456789012345678901234567890.123456"
    assert token_units(long, 6) == 123456789012345678901234567890123456
    assert token_units("340282366920938463463374607431768.211455", 6, limit=MAX_QUOTE_UNITS) == (
        MAX_QUOTE_UNITS
    )
    with pytest.raises(UserInputError, match="more than"):
        token_units("340282366920938463463374607431768.211456", 6, limit=MAX_QUOTE_UNITS)


@pytest.mark.parametrize(
    ("command", "option", "value", "shown"),
    [
        ("taker", "--size", "0", "--size"),  # was randrange ValueError
        ("taker", "--size", "-1", "--size"),
        ("taker", "--rate", "0", "--rate"),
        ("taker", "--rate", "nan", "--rate"),
        ("taker", "--duration", "-1", "--duration"),  # ran until Ctrl-C
        ("taker", "--chain-id", "0", "--chain-id"),  # 0 fell back to the deployment's
        ("book", "--levels", "0", "--levels"),  # said "the book is empty"
        ("book", "--levels", "-3", "--levels"),  # eth_abi ValueOutOfBounds
        ("book", "--levels", "5000", "--levels"),
        ("book", "--rpc", "notaurl", "--rpc"),  # InvalidUrlClientError, exit 1
        ("book", "--rpc", "http://127.0.0.1:99999", "--rpc"),
    ],
)
def test_book_and_taker_options_are_checked(
    command: str,
    option: str,
    value: str,
    shown: str,
    dep_file: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["chain", command, "--deployment", str(dep_file), "--dev-account", "taker"]
    if command == "book":
        argv = argv[:-2]
    _refused([*argv, option, value], capsys, shown)


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (None, "not found"),
        ("{}", "is not a deployment file"),
        ("[]", "is not a deployment file"),
        (
            '{"chain_id": 1, "rpc_url": "", "ws_url": "", "book": "", "markets": [{"id": 1}]}',
            "markets must map names to entries",
        ),
        ("\udcd0\udcff not text", "cannot read deployment file"),  # written as raw bytes
        (  # entries without the keys the commands read: a KeyError before
            '{"chain_id": 1, "rpc_url": "", "ws_url": "", "book": "",'
            ' "markets": {"SEI/USDC": {"id": 1, "base": "SEI", "quote": "USDC"}}}',
            "market 'SEI/USDC' lacks tick_size, lot_size",
        ),
        (
            '{"chain_id": 1, "rpc_url": "", "ws_url": "", "book": "",'
            ' "tokens": {"SEI": {"address": "0x0", "decimals": 18}},'
            ' "markets": {"SEI/USDC": {"id": 1, "base": "SEI", "quote": "USDC",'
            ' "tick_size": "0.0001", "lot_size": "1"}}}',
            "names quote token 'USDC', which is not under tokens",
        ),
        (
            '{"chain_id": 1, "rpc_url": "", "ws_url": "", "book": "",'
            ' "tokens": {"SEI": {"address": "0x0", "decimals": "18"}}}',
            "token 'SEI': decimals must be an integer",
        ),
    ],
)
def test_a_missing_or_foreign_deployment_file_is_named(
    content: str | None, why: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A missing file exited 1; JSON of another shape was a TypeError/AttributeError."""
    path = tmp_path / "d.json"
    if content is not None:
        path.write_bytes(content.encode("utf-8", "surrogateescape"))
    _refused(["chain", "book", "--deployment", str(path)], capsys, "--deployment", why)
    argv = ["wallet", "balances", "--deployment", str(path), "--address", TAKER]
    _refused(argv, capsys, "--deployment", why)


# --- keys: a missing key is a usage error everywhere -------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["wallet", "address"],
        ["chain", "deploy", "--rpc", DEAD_RPC, "--chain-id", "1328"],  # exited 1
        ["wallet", "balances", "--rpc", DEAD_RPC],  # exited 1
    ],
)
def test_no_signing_key_exits_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    _refused(argv, capsys, "FLASHMM_PRIVATE_KEY")


def test_an_unreadable_keystore_exits_2(
    dep_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ks = str(tmp_path / "missing-keystore.json")
    argv = ["chain", "deposit", "--deployment", str(dep_file), "--market", "SEI/USDC"]
    _refused([*argv, "--quote", "1", "--keystore", ks], capsys, ks)
    _refused(
        ["chain", "deploy", "--rpc", DEAD_RPC, "--chain-id", "1", "--keystore", ks], capsys, ks
    )


@pytest.mark.parametrize(
    ("option", "value", "why"),
    [
        ("--quote-token", "nothex", "0x and 40 hex digits"),  # an RPC error after connecting
        ("--quote-token", "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BD", "checksum"),
        ("--rpc", "ftp://127.0.0.1:1", "http://"),
        ("--rpc", "http://:80", "has no host"),
        ("--ws", "http://127.0.0.1:1", "ws://"),
        ("--max-fee-gwei", "nan", "finite"),  # ValueError traceback
        ("--max-fee-gwei", "0", "> 0"),
        ("--chain-id", "-5", "--chain-id"),
    ],
)
def test_deploy_options_are_checked_before_the_key_and_the_node(
    option: str, value: str, why: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["chain", "deploy", "--rpc", DEAD_RPC, "--chain-id", "1328", option, value]
    _refused(argv, capsys, option, why)


# --- wallet balances ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("notanaddress", "0x and 40 hex digits"),  # was the node's "invalid string length"
        ("0x3c44", "0x and 40 hex digits"),
        (TAKER[2:], "0x and 40 hex digits"),
        (TAKER[:-1] + "D", "EIP-55 checksum"),  # a typo the node accepted
    ],
)
def test_wallet_balances_checks_the_address_before_any_call(
    value: str, why: str, capsys: pytest.CaptureFixture[str]
) -> None:
    _refused(
        ["wallet", "balances", "--rpc", DEAD_RPC, "--address", value], capsys, "--address", why
    )


def test_check_address_accepts_lower_case_and_checksummed() -> None:
    assert check_address(TAKER.lower(), "--address") == TAKER
    assert check_address(TAKER, "--address") == TAKER


def test_wallet_balances_names_an_unknown_role(
    dep_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["wallet", "balances", "--deployment", str(dep_file), "--role", "maker"]
    _refused(argv, capsys, "--role", "'maker'", "known: taker")


# --- feed serve / record -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "shown"),
    [
        (["--port", "99999"], "--port"),  # was OverflowError from bind()
        (["--port", "-1"], "--port"),
        (["--http-port", "70000"], "--http-port"),
        (["--port", "9555", "--http-port", "9555"], "--http-port"),
        (["--speed", "-1"], "--speed"),  # served anyway
        (["--speed", "nan"], "--speed"),
    ],
)
def test_feed_serve_checks_ports_and_speed(
    args: list[str], shown: str, capsys: pytest.CaptureFixture[str]
) -> None:
    _refused(["feed", "serve", *args], capsys, shown)


@pytest.mark.parametrize(
    ("args", "shown"),
    [
        (["--symbols", ","], "--symbols"),
        (["--duration", "0"], "--duration"),  # recorded until Ctrl-C
        (["--duration", "-1"], "--duration"),  # recorded nothing and said so with exit 0
        (["--depth-limit", "0"], "--depth-limit"),
        (["--ws-url", "notaurl"], "--ws-url"),
        (["--rest-url", "notaurl"], "--rest-url"),  # recorded nothing, exit 0
    ],
)
def test_feed_record_checks_its_options_before_connecting(
    args: list[str], shown: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["feed", "record", "--symbols", "nexousdt", "--out", str(tmp_path / "r.gz")]
    base += ["--ws-url", "ws://127.0.0.1:1", "--rest-url", DEAD_RPC]
    _refused([*base, *args], capsys, shown)
    assert not (tmp_path / "r.gz").exists()


def test_feed_record_checks_out_before_connecting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--out was first used after the stream opened (a folder, or one that cannot be made)."""
    base = ["feed", "record", "--symbols", "nexousdt", "--ws-url", "ws://127.0.0.1:1"]
    _refused([*base, "--out", str(tmp_path)], capsys, "--out", "is a folder")
    (tmp_path / "file").write_text("")
    _refused([*base, "--out", str(tmp_path / "file" / "r.gz")], capsys, "cannot make folder")


def test_feed_record_does_not_overwrite_a_recording(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An existing recording was truncated the moment the command started."""
    out = tmp_path / "r.gz"
    out.write_bytes(b"a day of data")
    base = ["feed", "record", "--symbols", "nexousdt", "--out", str(out)]
    _refused([*base, "--ws-url", "ws://127.0.0.1:1"], capsys, "--out", "exists", "--force")
    assert out.read_bytes() == b"a day of data"


def test_feed_record_that_gets_no_snapshot_fails_and_keeps_no_empty_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Endpoints that never answer recorded an empty file and exited 0."""
    out = tmp_path / "r.gz"
    out.write_bytes(b"old")  # --force: the empty result does not stay either
    argv = ["feed", "record", "--symbols", "nexousdt", "--out", str(out), "--force"]
    argv += ["--duration", "0.5", "--ws-url", "ws://127.0.0.1:1", "--rest-url", DEAD_RPC]
    code, stdout, err = _run(argv, capsys)
    assert code == 1, (stdout, err)
    assert "nexousdt: nothing recorded" in stdout
    assert "flashmm: error: no depth snapshot for nexousdt" in err and DEAD_RPC in err
    assert "Traceback" not in err
    assert not out.exists()


def test_wallet_balances_refuses_address_and_role_together(
    dep_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--role was silently ignored beside --address."""
    argv = ["wallet", "balances", "--deployment", str(dep_file), "--address", TAKER]
    _refused([*argv, "--role", "maker"], capsys, "--address and --role")


def test_feed_serve_names_a_host_that_does_not_resolve(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Was '[Errno -2] Name or service not known', exit 1. (No resolver is asked here.)"""
    import socket

    real = socket.getaddrinfo

    def getaddrinfo(host: object, *args: object, **kw: object) -> object:
        if host == "no-such-host.invalid":
            raise socket.gaierror(socket.EAI_NONAME, "no resolver asked")
        return real(host, *args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    argv = ["feed", "serve", "--host", "no-such-host.invalid", "--port", "0", "--http-port", "0"]
    _refused(argv, capsys, "--host", "no-such-host.invalid", "no resolver asked")


# --- operator commands -------------------------------------------------------------------


@pytest.mark.parametrize("command", ["status", "pause", "resume", "stop", "emergency-stop"])
def test_a_profile_that_does_not_exist_is_named(
    command: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``--config paer`` said "no FlashMM bot is running", as if the profile were fine."""
    monkeypatch.chdir(tmp_path)
    line = _refused([command, "--config", "paer"], capsys, "--config", "'paer'")
    assert "paper" in line  # the shipped profiles are listed
    # a real profile with no bot is still "not running" (exit 1)
    code, _, err = _run([command, "--config", "paper"], capsys)
    assert code == 1 and "no FlashMM bot is running" in err
    # --socket wins over --config: no profile is looked up
    code, _, err = _run([command, "--config", "paer", "--socket", "x.sock"], capsys)
    assert code == 1 and "no FlashMM bot is running" in err


@pytest.mark.parametrize("value", ["-1", "0", "nan"])
def test_operator_timeout_must_be_positive(
    value: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A negative or NaN timeout was a ValueError from socket.settimeout."""
    _refused(
        ["status", "--socket", str(tmp_path / "x.sock"), "--timeout", value], capsys, "--timeout"
    )


def test_status_with_a_missing_profile_stays_light(tmp_path: Path) -> None:
    heavy = ("asyncio", "loguru", "numpy", "onnxruntime", "numba", "aiohttp", "websockets")
    code = (
        "import contextlib, io, sys\n"
        "from flashmm.cli import main\n"
        "err = io.StringIO()\n"
        "with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):\n"
        "    try:\n"
        "        main(['status', '--config', 'paer'])\n"
        "    except SystemExit as exc:\n"
        "        code = exc.code\n"
        "print(code, err.getvalue().strip())\n"
        f"print(sorted(m for m in {heavy!r} if m in sys.modules))\n"
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT), XDG_RUNTIME_DIR=str(tmp_path))
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path
    )
    first, loaded = out.stdout.strip().splitlines()
    assert first.startswith("2 flashmm: error: --config: no profile 'paer'"), out.stdout
    assert loaded == "[]", out.stdout


# --- on a chain: amounts the account does not have, a quote token that is no token ---------


def _nonce(chain: LocalChain, address: str) -> int:
    from flashmm.venues.sei.rpc import JsonRpc

    async def get() -> int:
        async with JsonRpc(chain.rpc_url) as rpc:
            return int(await rpc.call("eth_getTransactionCount", [address, "latest"]), 16)

    return asyncio.run(get())


def test_deposit_and_withdraw_beyond_the_balance_send_nothing(
    fast_chain: LocalChain, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A deposit above the wallet's tokens sent its approvals, then reverted with
    TransferFailed(); now both are refused naming the option, before any transaction.
    --mint tried to mint a real quote token too (docs/sei.md: it mints the test base)."""
    dep = tmp_path / "dep.json"
    fast_chain.dep.write(dep)
    taker = fast_chain.address("taker")
    before = _nonce(fast_chain, taker)
    argv = ["--deployment", str(dep), "--market", "SEI/USDC", "--dev-account", "taker"]
    line = _refused(["chain", "deposit", *argv, "--quote", "1000000000"], capsys, "--quote")
    assert "that" in line and "holds" in line and "--mint" in line
    line = _refused(["chain", "withdraw", *argv, "--base", "1000000000"], capsys, "--base")
    assert "free in the SEI/USDC account" in line
    assert _nonce(fast_chain, taker) == before
    # and a good one still goes through
    code, out, err = _run(["chain", "withdraw", *argv, "--quote", "1.5"], capsys)
    assert code == 0 and "USDC: free" in out, err
    # a real quote token (as on testnet): --mint mints the base only, the quote is the wallet's
    data = json.loads(dep.read_text())
    data["tokens"]["USDC"]["mintable"] = False
    dep.write_text(json.dumps(data))
    before = _nonce(fast_chain, taker)
    line = _refused(
        ["chain", "deposit", *argv, "--base", "10", "--mint", "--quote", "1000000000"],
        capsys,
        "--quote",
    )
    assert "holds" in line and "--mint" not in line
    assert _nonce(fast_chain, taker) == before  # not even the base was minted or approved
    code, out, err = _run(
        ["chain", "deposit", *argv, "--base", "10", "--mint", "--quote", "1"], capsys
    )
    assert code == 0 and "SEI: free" in out, err


def test_deploy_refuses_a_quote_token_that_is_no_token_before_deploying(
    fast_chain: LocalChain,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The zero address was an eth_abi InsufficientDataBytes traceback after FlashBook and
    the test tokens were deployed (gas spent for a deployment never written)."""
    monkeypatch.setenv("FLASHMM_PRIVATE_KEY", fast_chain.key("spare"))
    spare = fast_chain.address("spare")
    before = _nonce(fast_chain, spare)
    out = tmp_path / "d.json"
    argv = ["chain", "deploy", "--rpc", fast_chain.rpc_url, "--chain-id", "1328", "--out", str(out)]
    _refused([*argv, "--quote-token", "0x" + "00" * 20], capsys, "--quote-token", "no contract")
    _refused([*argv, "--quote-token", fast_chain.dep.book], capsys, "--quote-token", "decimals()")
    assert _nonce(fast_chain, spare) == before and not out.exists()


# --- output files: checked before a chain is set up, a contract deployed or a key made -----


def test_deploy_keeps_an_earlier_deployment_file(
    fast_chain: LocalChain,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A second `chain deploy` overwrote var/deployment.json, the only record of the first
    book's address and markets, after deploying a new book."""
    monkeypatch.setenv("FLASHMM_PRIVATE_KEY", fast_chain.key("spare"))
    spare = fast_chain.address("spare")
    before = _nonce(fast_chain, spare)
    out = tmp_path / "d.json"
    out.write_text('{"book": "0xearlier"}')
    argv = ["chain", "deploy", "--rpc", fast_chain.rpc_url, "--chain-id", "1328", "--out", str(out)]
    _refused(argv, capsys, "--out", "exists", "--force")
    assert _nonce(fast_chain, spare) == before and out.read_text() == '{"book": "0xearlier"}'


@pytest.mark.parametrize(
    "argv",
    [
        ["chain", "local", "--port", "0"],  # IsADirectoryError after anvil started and deployed
        ["chain", "deploy", "--rpc", DEAD_RPC, "--chain-id", "1328"],  # after the deployment
        ["wallet", "new"],  # the key was made, then lost to FileNotFoundError
    ],
)
def test_an_out_path_that_cannot_be_written_is_refused_first(
    argv: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("FLASHMM_KEYSTORE_PASSWORD", "pw")
    _refused([*argv, "--out", str(tmp_path)], capsys, "--out", str(tmp_path), "is a folder")
    blocker = tmp_path / "file"
    blocker.write_text("")
    _refused([*argv, "--out", str(blocker / "x.json")], capsys, "--out", "cannot make folder")


def test_wallet_new_without_a_terminal_asks_for_the_passphrase_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The prompt read EOF: a blank line and exit 130, no word of what was missing."""
    monkeypatch.delenv("FLASHMM_KEYSTORE_PASSWORD", raising=False)
    out = tmp_path / "ks.json"
    _refused(["wallet", "new", "--out", str(out)], capsys, "FLASHMM_KEYSTORE_PASSWORD")
    assert not out.exists()
