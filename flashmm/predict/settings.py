"""Settings of the prediction layer (``model:`` in the main config)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_MODEL = "models/flashmm-direction-1s.onnx"
#: earlier names of the shipped model, read as the current one when no such file exists
OLD_MODEL_NAMES = ("flashmm-nexo-1s.onnx",)


class ModelSettings(BaseModel):
    """Model file, quoting use of its signal and the ML circuit breaker."""

    model_config = ConfigDict(extra="forbid")

    # the imbalance rule quotes unless a profile turns the model on: the model does not
    # beat the rule on held-back walk-forward windows (models/README.md)
    enabled: bool = False
    path: str | None = DEFAULT_MODEL
    horizon: str = "1s"
    # quoting
    max_skew_bps: float = Field(4.0, ge=0)
    min_confidence: float = Field(0.55, ge=0, le=1)
    low_confidence_widen: float = Field(1.25, ge=1)
    # widen by 1 + move_widen * P(the mid moves over the horizon)
    move_widen: float = Field(0.5, ge=0, allow_inf_nan=False)
    # the model's up/down lean must reach this (like the rule's |imbalance|) to call a direction
    min_lean: float = Field(0.2, ge=0, le=1)
    # skew on the move regressor instead of the classifier (off: it does not help, see the card)
    use_regressor: bool = False
    # an online model per market, warm-started from the shipped one, learning from realised moves
    online: bool = False
    online_lr: float = Field(0.02, gt=0, le=1, allow_inf_nan=False)
    online_l2: float = Field(0.001, ge=0, le=1, allow_inf_nan=False)
    # evaluate small dense graphs with FlashMM's compiled kernel (checked against onnxruntime
    # at load; onnxruntime for any other graph or when they differ)
    native: bool = True
    # update the 64 features in FlashMM's compiled core (bit-identical to the Python
    # features, which run until the core is loaded)
    native_features: bool = True
    breaker_widen: float = Field(1.5, ge=1)
    # breaker: latency
    latency_budget_us: float = Field(5000.0, gt=0)
    latency_window: int = Field(200, ge=10)
    latency_min_samples: int = Field(50, ge=1)
    # the cost of one model call on a simulated clock (backtest, replay);
    # null: measured once when the model loads
    sim_latency_us: float | None = Field(100.0, gt=0, allow_inf_nan=False)
    # breaker: drift
    drift_z_limit: float = Field(8.0, gt=0)
    drift_max_features: int = Field(0, ge=0, le=64)
    drift_sustain_s: float = Field(30.0, ge=0)
    # breaker: live hit rate on moved samples
    hit_rate_floor: float = Field(0.45, ge=0, le=1)
    hit_rate_window: int = Field(300, ge=10)
    # breaker: recovery
    cooldown_s: float = Field(60.0, ge=0)
    half_open_successes: int = Field(20, ge=1)

    @field_validator("horizon")
    @classmethod
    def _horizon_ok(cls, v: str) -> str:
        from flashmm.errors import UserInputError
        from flashmm.predict.labels import parse_horizon

        try:
            parse_horizon(v)
        except UserInputError as exc:
            raise ValueError(str(exc)) from None
        return v

    def resolve_path(self) -> Path | None:
        """The model file: ``path`` as given if absolute, else against the
        current directory, the repository root, then FlashMM's package (where the
        shipped model is installed). ``None`` when unset."""
        if not self.path:
            return None
        p = Path(self.path).expanduser()
        found = self._find(p)
        if found is None and p.name in OLD_MODEL_NAMES:
            # the shipped model was renamed (it is trained on several markets, not NEXO)
            new = p.with_name(Path(DEFAULT_MODEL).name)
            found = self._find(new)
            if found is not None:
                from loguru import logger

                logger.warning(
                    "model.path {}: renamed to {}; using it (update the profile)", p, new.name
                )
        if found is not None:
            return found
        return p if p.is_absolute() else Path.cwd() / p

    @staticmethod
    def _find(p: Path) -> Path | None:
        if p.is_absolute():
            return p if p.exists() else None
        for base in (Path.cwd(), REPO_ROOT, REPO_ROOT / "flashmm"):
            if (base / p).exists():
                return base / p
        return None
