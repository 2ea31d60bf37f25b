"""The YAML strategy profile: strict pydantic models, loading and error messages.

Unknown keys are errors. Every problem is reported as one line with the
field path, the bad value and what is allowed. Secrets never live in YAML:
they come from the environment (or a ``.env`` file), see ``.env.example``.
"""

from __future__ import annotations

import importlib
import math
import os
import re
import stat
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from flashmm.engine import EngineSettings
from flashmm.errors import ConfigError
from flashmm.feeds.settings import FeedConfig
from flashmm.paths import BUNDLED_PREFIX, PACKAGE_DIR, bundled_names, find_profile, resolve_path
from flashmm.risk import RiskConfig
from flashmm.strategy.base import StrategyConfig
from flashmm.types import MarketSpec


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MarketConfig(Strict):
    symbol: str = Field(description="Our market name on the venue, e.g. SEI/USDC")
    tick_size: Decimal = Field(gt=0, description="Price increment")
    lot_size: Decimal = Field(gt=0, description="Size increment")
    reference: str = Field(description="Reference stream symbol, e.g. nexousdt")

    @field_validator("reference")
    @classmethod
    def _lower(cls, v: str) -> str:
        if not v or "@" in v or "/" in v:
            raise ValueError("must be a stream symbol such as 'nexousdt'")
        return v.lower()

    def spec(self) -> MarketSpec:
        return MarketSpec(self.symbol, self.tick_size, self.lot_size, self.reference)


class VenueConfig(Strict):
    kind: Literal["sim", "sei"] = "sim"
    sim: dict[str, Any] = Field(default_factory=dict, description="Simulator settings")
    sei: dict[str, Any] | None = Field(None, description="Sei EVM venue settings")


class UIConfig(Strict):
    panel: bool = True
    refresh_hz: float = Field(4.0, gt=0, le=4.0)


class LoggingConfig(Strict):
    level: Literal["TRACE", "DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    json_logs: bool = Field(False, alias="json")
    file: str = "var/flashmm.log"

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class ControlConfig(Strict):
    socket_path: str | None = Field(None, description="Unix socket; default under $XDG_RUNTIME_DIR")
    data_dir: str = Field("var", description="Journal and runtime files")
    journal: bool = True
    orphan_orders: Literal["cancel", "adopt"] = "cancel"
    order_events_keep_days: float = Field(
        7.0, gt=0, le=36500, description="Order events older than this fold into daily counts"
    )
    metrics_port: int | None = Field(None, ge=1, le=65535)


class ApiConfig(Strict):
    """The opt-in HTTP API, stream and web page (see docs/operations.md)."""

    enabled: bool = False
    host: str = Field("127.0.0.1", description="Bind address; non-loopback needs a token")
    port: int = Field(8780, ge=0, le=65535, description="0 = any free port")
    max_body_bytes: int = Field(65_536, ge=1_024, le=16 * 1024 * 1024)
    control_per_minute: int = Field(30, ge=1, description="Control requests per client")
    stream_hz: float = Field(4.0, gt=0, le=4.0, description="Snapshot rate on the stream")
    stream_queue: int = Field(512, ge=16, description="Messages queued per stream client")
    max_clients: int = Field(500, ge=1, description="Concurrent stream clients")
    max_connections: int = Field(
        256, ge=1, le=10_000, description="Open HTTP connections at once (stream clients apart)"
    )
    idle_timeout_s: float = Field(
        30.0, gt=0, le=3600, description="Close a connection idle or sending no whole request"
    )
    metrics_public: bool = Field(False, description="Serve /metrics without a token")


class WebhookConfig(Strict):
    kind: Literal["telegram", "slack", "discord", "json"]
    url_env: str = Field(description="Environment variable holding the URL or bot token")
    chat_id: str | None = Field(None, description="Telegram chat id")
    api_base: str = Field("https://api.telegram.org", description="Telegram API base URL")


class AlertsConfig(Strict):
    """Opt-in webhooks: breaker trips, halts, emergency stops, big fills, daily P&L."""

    enabled: bool = False
    webhooks: list[WebhookConfig] = Field(default_factory=list)
    fill_usdc: float | None = Field(None, gt=0, description="Alert on fills at least this big")
    daily_summary_utc: str | None = Field("00:00", pattern=r"^([01]\d|2[0-3]):[0-5]\d$")
    per_minute: int = Field(20, ge=1, description="Messages per webhook per minute")
    dedup_s: float = Field(300.0, ge=0, description="Same alert again only after this")
    retries: int = Field(4, ge=0, le=10)
    timeout_s: float = Field(10.0, gt=0)


class Config(Strict):
    mode: Literal["paper", "live", "backtest"] = "paper"
    name: str | None = Field(None, description="Profile name (defaults to the file name)")
    markets: list[MarketConfig] = Field(min_length=1)
    feed: FeedConfig = FeedConfig()
    venue: VenueConfig = VenueConfig()
    strategy: StrategyConfig = StrategyConfig()
    risk: RiskConfig = RiskConfig()
    model: dict[str, Any] = Field(default_factory=dict)
    ui: UIConfig = UIConfig()
    logging: LoggingConfig = LoggingConfig()
    control: ControlConfig = ControlConfig()
    api: ApiConfig = ApiConfig()
    alerts: AlertsConfig = AlertsConfig()

    @model_validator(mode="after")
    def _cross_checks(self) -> Config:
        symbols = [m.symbol for m in self.markets]
        if len(set(symbols)) != len(symbols):
            raise ValueError(f"markets: duplicate symbol in {symbols}")
        refs = [m.reference for m in self.markets]
        if len(set(refs)) != len(refs):
            shared = sorted({r for r in refs if refs.count(r) > 1})
            raise ValueError(
                f"markets: each market needs its own reference stream, {shared} is followed twice"
            )
        if self.mode == "live" and self.venue.kind != "sei":
            raise ValueError("venue.kind: live mode needs venue.kind 'sei'")
        if self.mode in ("paper", "backtest") and self.venue.kind != "sim":
            raise ValueError(f"venue.kind: {self.mode} mode needs venue.kind 'sim'")
        if self.venue.kind == "sei" and self.venue.sei is None:
            raise ValueError("venue.sei: required when venue.kind is 'sei'")
        return self

    @property
    def profile(self) -> str:
        return self.name or "flashmm"

    def specs(self) -> list[MarketSpec]:
        return [m.spec() for m in self.markets]

    def engine_settings(self) -> EngineSettings:
        """The engine's own settings, composed from the profile's sections."""
        return EngineSettings(
            mode=self.mode,
            profile=self.profile,
            quote_hz=self.strategy.quote_hz,
            requote_mid_move_bps=self.strategy.requote_mid_move_bps,
        )


# --- loading ------------------------------------------------------------------


def _fmt_value(v: Any) -> str:
    s = repr(v)
    return s if len(s) <= 60 else s[:57] + "..."


def format_validation_error(exc: ValidationError, prefix: str = "") -> list[str]:
    """One line per problem: ``path: message (was VALUE)``."""
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"] if p != "__root__")
        path = f"{prefix}{loc}" if loc else prefix.rstrip(".") or "(top level)"
        typ, msg = err["type"], err["msg"]
        ours = msg.startswith("Value error, ")  # raised by a validator of ours
        msg = msg.removeprefix("Value error, ")
        if typ == "extra_forbidden":
            lines.append(f"{path}: unknown key (check the spelling; see the config reference)")
        elif typ == "missing":
            lines.append(f"{path}: required but missing")
        elif ours and ": " in msg and typ == "value_error" and not loc:
            lines.append(msg)  # a cross-field error names its own field first
        else:
            lines.append(f"{path}: {msg} (was {_fmt_value(err.get('input'))})")
    return lines


#: a profile is a few kB; anything this large is not one
MAX_PROFILE_BYTES = 1_000_000
#: longer strings in a profile are refused (no path or name is this long)
MAX_TEXT_CHARS = 1024
_NON_FINITE = re.compile(r"[+-]?(nan|inf|infinity)", re.IGNORECASE)


def _short(text: str, keep: int = 40) -> str:
    return text if len(text) <= keep else f"{text[:keep]}... ({len(text)} characters)"


def load_yaml(path: Path) -> dict[str, Any]:
    try:
        st = path.stat()
        if not stat.S_ISREG(st.st_mode):
            kind = "a folder" if stat.S_ISDIR(st.st_mode) else "a pipe or device"
            raise ConfigError(str(path), [f"not a regular file ({kind})"])
        if st.st_size > MAX_PROFILE_BYTES:
            raise ConfigError(
                str(path), [f"too large for a profile ({st.st_size} bytes; at most 1 MB)"]
            )
        data = path.read_bytes()[: MAX_PROFILE_BYTES + 1]
    except FileNotFoundError:
        raise ConfigError(str(path), ["file not found"]) from None
    except OSError as exc:
        raise ConfigError(str(path), [f"cannot read ({exc.strerror})"]) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ConfigError(
            str(path), [f"line {line}: not UTF-8 text (byte 0x{data[exc.start]:02x})"]
        ) from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(str(path), [f"{where}invalid YAML ({problem})"]) from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(str(path), ["top level must be a mapping of sections"])
    return raw


def apply_overrides(raw: dict[str, Any], sets: list[str]) -> dict[str, Any]:
    """Apply ``a.b.c=value`` overrides (values parsed as YAML scalars)."""
    for item in sets:
        if "=" not in item:
            raise ConfigError(
                "--set", [f"{item!r}: expected KEY=VALUE, e.g. strategy.params.gamma=0.2"]
            )
        key, val = item.split("=", 1)
        parts = key.strip().split(".")
        node = raw
        for p in parts[:-1]:
            nxt = node.setdefault(p, {})
            if not isinstance(nxt, dict):
                raise ConfigError("--set", [f"{key}: {p} is not a section"])
            node = nxt
        node[parts[-1]] = yaml.safe_load(val)
    return raw


def _validate_plugins(cfg: Config) -> list[str]:
    """Strategy params and nested settings checked by their own models."""
    problems: list[str] = []
    from flashmm.strategy import get_strategy_class

    try:
        cls = get_strategy_class(cfg.strategy.name)
    except KeyError as exc:
        problems.append(f"strategy.name: {exc.args[0]} (was {cfg.strategy.name!r})")
    else:
        try:
            cls.params_model.model_validate(cfg.strategy.params)
        except ValidationError as exc:
            problems += format_validation_error(exc, "strategy.params.")
    for section, loader in _SECTION_MODELS.items():
        value = _get_path(cfg, section)
        if value is None or (model := loader()) is None:
            continue
        try:
            model.model_validate(value)
        except ValidationError as exc:
            problems += format_validation_error(exc, section + ".")
    return problems


def _get_path(cfg: Config, dotted: str) -> Any:
    node: Any = cfg
    for p in dotted.split("."):
        node = getattr(node, p, None)
        if node is None:
            return None
    return node


def _settings_model(module: str, name: str) -> Callable[[], type[BaseModel] | None]:
    """The settings model ``name`` of a room, imported when first asked for (None when
    its extra is not installed)."""

    def load() -> type[BaseModel] | None:
        try:
            model: type[BaseModel] = getattr(importlib.import_module(module), name)
        except ImportError:
            return None
        return model

    return load


_model_settings = _settings_model("flashmm.predict.settings", "ModelSettings")

#: the rooms' settings models of the nested sections, composed by the profile
_SECTION_MODELS = {
    "model": _model_settings,
    "venue.sim": _settings_model("flashmm.venues.sim", "SimSettings"),
    "venue.sei": _settings_model("flashmm.venues.sei.settings", "SeiVenueSettings"),
}


# input files named in a profile, resolved against the profile's own folder
_PROFILE_INPUTS = (("model", "path"), ("venue", "sei", "keystore"), ("venue", "sei", "deployment"))


def _relative_to_profile(value: str, base: Path) -> str:
    """``value`` made absolute against the profile's folder (then FlashMM's package) when
    the file is there and not in the current directory; otherwise unchanged."""
    p = Path(value).expanduser()
    if value.startswith(BUNDLED_PREFIX) or p.is_absolute():
        return value
    if (base / p).exists():
        return str((base / p).resolve())
    if not p.exists() and (PACKAGE_DIR / p).exists():
        return str((PACKAGE_DIR / p).resolve())
    return value


def _resolve_profile_paths(raw: dict[str, Any], base: Path) -> None:
    feed = raw.get("feed")
    if isinstance(feed, dict) and isinstance(feed.get("files"), list):
        feed["files"] = [
            _relative_to_profile(f, base) if isinstance(f, str) else f for f in feed["files"]
        ]
    for keys in _PROFILE_INPUTS:
        node: Any = raw
        for k in keys[:-1]:
            node = node.get(k) if isinstance(node, dict) else None
        if isinstance(node, dict) and isinstance(node.get(keys[-1]), str):
            node[keys[-1]] = _relative_to_profile(node[keys[-1]], base)


def load_config(
    path: str | Path | None = None,
    sets: list[str] | None = None,
    origins: list[str] | None = None,
) -> Config:
    """Load and validate a profile. Raises :class:`ConfigError` listing every problem.

    Input files named in the profile (recordings, model, keystore, deployment) are
    relative to the profile's folder; ``--set`` values are relative to the current one.
    ``origins`` names where each of ``sets`` came from (default ``--set``; a sweep file,
    ``--compare``): a problem in a field one of them set is blamed on it, not the file.
    """
    p = find_profile(path)
    raw = load_yaml(p)
    if sets:
        raw = apply_overrides(raw, sets)
    problems = _check_values(raw)
    if problems:
        raise _config_error(p, problems, sets, origins)
    try:
        _resolve_profile_paths(raw, p.resolve().parent)
        try:
            cfg = Config.model_validate(raw)
        except ValidationError as exc:
            raise _config_error(p, format_validation_error(exc), sets, origins) from None
        problems = _validate_plugins(cfg)
    except OSError as exc:  # a path the system refuses (too long, a loop ...)
        name = _short(str(exc.filename)) if exc.filename else "a path"
        raise ConfigError(str(p), [f"{name}: {exc.strerror or exc}"]) from None
    if problems:
        raise _config_error(p, problems, sets, origins)
    if cfg.name is None:
        cfg = cfg.model_copy(update={"name": p.stem})
    return cfg


def _config_error(
    path: Path, problems: list[str], sets: list[str] | None, origins: list[str] | None
) -> ConfigError:
    """The problems of a profile, each blamed on the override that set its field (the
    text before the first ``: ``), or that set a key inside it (a cross-field check of
    ``strategy.params`` after ``--set strategy.params.max_spread_bps=1``), else on the
    file. The last matching override wins, as it is the one applied."""
    sets = sets or []
    origins = origins or ["--set"] * len(sets)
    keyed = [(s.split("=", 1)[0].strip(), o) for s, o in zip(sets, origins, strict=True)]

    def blame(problem: str) -> str:
        field = problem.split(": ", 1)[0]
        hits = [
            o
            for k, o in keyed
            if field == k or field.startswith((f"{k}.", f"{k}[")) or k.startswith(f"{field}.")
        ]
        return hits[-1] if hits else str(path)

    return ConfigError(str(path), problems, [blame(q) for q in problems])


def _check_values(node: Any, where: str = "") -> list[str]:
    """Numbers that are not finite and strings too long to be a path or a name.

    YAML reads ``.nan``/``.inf`` as floats and ``nan``/``inf`` as text that
    pydantic would turn into floats: both are refused with the field's path.
    """
    if isinstance(node, dict):
        return [p for k, v in node.items() for p in _check_values(v, f"{where}{k}.")]
    if isinstance(node, list):
        return [p for i, v in enumerate(node) for p in _check_values(v, f"{where[:-1]}[{i}].")]
    field = where[:-1]
    if isinstance(node, float) and not math.isfinite(node):
        return [f"{field}: must be a finite number (was {node})"]
    if isinstance(node, str):
        if _NON_FINITE.fullmatch(node.strip()):
            return [f"{field}: must be a finite number (was {node!r})"]
        if len(node) > MAX_TEXT_CHARS:
            return [f"{field}: too long ({len(node)} characters; at most {MAX_TEXT_CHARS})"]
    return []


def full_dump(cfg: Config) -> dict[str, Any]:
    """The profile as plain data with every default filled in, nested sections too
    (strategy params, model, simulator and Sei venue settings)."""
    out: dict[str, Any] = cfg.model_dump(mode="json", by_alias=True)
    from flashmm.strategy import get_strategy_class

    params = get_strategy_class(cfg.strategy.name).params_model.model_validate(cfg.strategy.params)
    out["strategy"]["params"] = params.model_dump(mode="json")
    for section, loader in _SECTION_MODELS.items():
        value = _get_path(cfg, section)
        model = loader()
        if model is None or (value is None and section == "venue.sei"):
            continue
        *parents, last = section.split(".")
        node = out
        for key in parents:
            node = node[key]
        node[last] = model.model_validate(value or {}).model_dump(mode="json")
    return out


def model_enabled(cfg: Config) -> bool:
    """``model.enabled`` as the model settings read it (``"false"`` is off), default off."""
    model_cls = _model_settings()
    if model_cls is None:
        return False
    settings: Any = model_cls.model_validate(cfg.model)
    return bool(settings.enabled)


def check_files(cfg: Config) -> list[str]:
    """Problems with the files a profile names: missing recordings, keystore or
    deployment, and a model that does not load. One line each; empty when all is well."""
    problems: list[str] = []
    if cfg.feed.kind == "replay":
        if not cfg.feed.files:
            problems.append(
                "feed.files: no recordings configured; pass --data FILE to every run"
                " or list one (e.g. bundled:nexo)"
            )
        for i, f in enumerate(cfg.feed.files):
            if not resolve_path(f).is_file():
                problem = f"feed.files[{i}]: file not found: {f}"
                if f.startswith(BUNDLED_PREFIX):
                    problem += f" (bundled: {', '.join(bundled_names())})"
                problems.append(problem)
    sei = cfg.venue.sei or {}
    for key, hint in (
        ("keystore", ""),
        ("deployment", " (written by `flashmm chain local` or `chain deploy`)"),
    ):
        value = sei.get(key)
        if isinstance(value, str) and not Path(value).expanduser().is_file():
            problems.append(f"venue.sei.{key}: file not found: {value}{hint}")
    model_cls = _model_settings()
    if model_cls is not None:
        settings: Any = model_cls.model_validate(cfg.model)
        if settings.enabled and settings.path:
            path = settings.resolve_path()
            if path is None or not path.is_file():
                problems.append(f"model.path: file not found: {settings.path}")
            else:
                try:
                    from flashmm.predict.onnx_model import OnnxPredictor

                    OnnxPredictor(path)
                except ImportError as exc:
                    problems.append(f"model.path: cannot load {path.name} ({exc})")
                except Exception as exc:  # a model that does not load is the problem reported
                    problems.append(f"model.path: {path.name} does not load: {exc}")
    return problems


def load_dotenv_file(profile: str | Path | None = None) -> None:
    """Read ``.env`` files into the environment: the one in the current directory, then
    the one beside ``profile`` (``flashmm init mybot`` writes both into ``mybot/``, and
    ``flashmm run --config mybot/paper.yaml`` from the parent must find its keys).

    A variable set non-empty in the environment is never overridden; otherwise the first
    non-empty value wins, so the template's empty ``FLASHMM_PRIVATE_KEY=`` in one file does
    not hide a key in the other. A profile that does not exist is left to the loader."""
    try:
        from dotenv import dotenv_values
    except ImportError:  # pragma: no cover
        return
    files = [Path.cwd() / ".env"]
    if profile is not None:
        try:
            beside = find_profile(profile).resolve().parent / ".env"
        except (OSError, ValueError):
            beside = None
        if beside is not None and beside != files[0].resolve():
            files.append(beside)
    for f in files:
        if not f.is_file():
            continue
        for key, value in dotenv_values(f).items():
            if os.environ.get(key):
                continue
            if value or key not in os.environ:
                os.environ[key] = value or ""


SECRET_ENV = (
    "FLASHMM_PRIVATE_KEY",
    "FLASHMM_KEYSTORE_PASSWORD",
    "FLASHMM_API_TOKEN",
    "FLASHMM_API_READ_TOKEN",
)


def secret_values() -> list[str]:
    """Secrets present in the environment, for log redaction."""
    return [v for k in SECRET_ENV if (v := os.environ.get(k)) and len(v) >= 8]
