"""Profiles, the model and a data sample are found by name from any folder; ``flashmm init``."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import yaml
from kit.data import ETH_SLICE, NEXO_23
from typer.testing import CliRunner

from flashmm.cli import app, main
from flashmm.config import find_profile, load_config, resolve_path
from flashmm.predict.settings import ModelSettings


@pytest.fixture
def elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The current directory is an empty folder outside the repository."""
    d = tmp_path / "elsewhere"
    d.mkdir()
    monkeypatch.chdir(d)
    return d


@pytest.mark.parametrize("name", ["paper", "backtest", "local", "testnet", "configs/paper.yaml"])
def test_shipped_profiles_load_by_name_from_any_folder(elsewhere: Path, name: str) -> None:
    path = find_profile(name)
    assert path.is_file() and path.suffix == ".yaml"
    cfg = load_config(name)
    assert cfg.name == Path(name).stem


def test_the_shipped_model_is_found_from_any_folder(elsewhere: Path) -> None:
    cfg = load_config("paper")
    model = ModelSettings.model_validate(cfg.model).resolve_path()
    assert model is not None and model.is_file() and model.name == "flashmm-direction-1s.onnx"


def test_bundled_recordings_by_name_or_prefix(elsewhere: Path) -> None:
    assert resolve_path("bundled:nexo").read_bytes() == NEXO_23.read_bytes()
    assert resolve_path("bundled:eth").samefile(ETH_SLICE)
    assert resolve_path("bundled:nexousdt_20240723.dat.gz").samefile(NEXO_23)
    assert not resolve_path("bundled:nothing").exists()


def test_input_paths_are_relative_to_the_profile(tmp_path: Path, elsewhere: Path) -> None:
    home = tmp_path / "bot"
    home.mkdir()
    (home / "rec.dat.gz").write_bytes(NEXO_23.read_bytes())
    raw = yaml.safe_load(find_profile("paper").read_text())
    raw["feed"]["files"] = ["rec.dat.gz", "bundled:eth"]
    (home / "mine.yaml").write_text(yaml.safe_dump(raw))
    cfg = load_config(home / "mine.yaml")
    assert Path(cfg.feed.files[0]) == (home / "rec.dat.gz").resolve()
    assert cfg.feed.files[1] == "bundled:eth"
    # --set values are the user's own, relative to the current folder: left alone
    cfg = load_config(home / "mine.yaml", ["feed.files=[x.gz]"])
    assert cfg.feed.files == ["x.gz"]


def _main(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    return int(exc.value.code or 0), capsys.readouterr().err.strip()


def test_init_writes_an_editable_profile_and_env_template(
    elsewhere: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    runner = CliRunner()
    r = runner.invoke(app, ["init", "newbot"])
    assert r.exit_code == 0, r.output
    profile, env = elsewhere / "newbot" / "paper.yaml", elsewhere / "newbot" / ".env"
    assert "wrote" in r.output and "flashmm run --config paper.yaml" in r.output
    assert stat.S_IMODE(env.stat().st_mode) == 0o600
    assert "FLASHMM_PRIVATE_KEY=" in env.read_text()
    cfg = load_config(profile)
    assert cfg.mode == "paper" and [resolve_path(f).is_file() for f in cfg.feed.files] == [
        True,
        True,
    ]
    # a second init refuses to overwrite: one line, exit 2
    assert _main(["init", "newbot"], capsys) == (
        2,
        "flashmm: error: newbot/paper.yaml: already exists"
        " (pass --force to overwrite, or choose another DIR)",
    )
    code, err = _main(["init", "newbot", "--profile", "nope"], capsys)
    assert code == 2 and err.startswith("flashmm: error: --profile: no shipped profile 'nope'")


def test_the_env_beside_the_profile_is_read_from_another_folder(
    elsewhere: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The README: `flashmm init mybot`, then `flashmm run --config mybot/paper.yaml` from
    the parent; the keys in mybot/.env must be found (only the current folder's was read)."""
    from flashmm.config import load_dotenv_file

    assert CliRunner().invoke(app, ["init", "mybot"]).exit_code == 0
    env = elsewhere / "mybot" / ".env"
    env.write_text(env.read_text() + "\nFLASHMM_DOTENV_PROBE=beside\nFLASHMM_DOTENV_SET=file\n")
    (elsewhere / ".env").write_text("FLASHMM_DOTENV_PROBE=cwd\n")
    monkeypatch.setenv("FLASHMM_DOTENV_SET", "shell")
    monkeypatch.setenv("FLASHMM_DOTENV_PROBE", "x")
    monkeypatch.delenv("FLASHMM_DOTENV_PROBE")
    load_dotenv_file("mybot/paper.yaml")
    # the current folder's .env first, then the profile's; neither overrides the shell
    assert os.environ["FLASHMM_DOTENV_PROBE"] == "cwd"
    assert os.environ["FLASHMM_DOTENV_SET"] == "shell"
    # an empty line (the template's FLASHMM_PRIVATE_KEY=) does not hide the other file's key
    (elsewhere / ".env").write_text("FLASHMM_DOTENV_PROBE=\n")
    monkeypatch.delenv("FLASHMM_DOTENV_PROBE")
    load_dotenv_file("mybot/paper.yaml")
    assert os.environ["FLASHMM_DOTENV_PROBE"] == "beside"
    (elsewhere / ".env").unlink()
    monkeypatch.delenv("FLASHMM_DOTENV_PROBE")
    load_dotenv_file("mybot/paper.yaml")
    assert os.environ["FLASHMM_DOTENV_PROBE"] == "beside"
    monkeypatch.delenv("FLASHMM_DOTENV_PROBE")
    load_dotenv_file("no/such/profile.yaml")  # the loader reports a missing profile
    assert "FLASHMM_DOTENV_PROBE" not in os.environ


def test_init_with_force_and_another_profile(elsewhere: Path) -> None:
    runner = CliRunner()
    assert runner.invoke(app, ["init", "--profile", "backtest"]).exit_code == 0
    assert (elsewhere / "backtest.yaml").is_file()
    assert runner.invoke(app, ["init", "--profile", "backtest", "--force"]).exit_code == 0
