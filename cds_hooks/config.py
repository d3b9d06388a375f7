"""Service configuration: one settings class, read from the environment and ``.env``.

Every variable carries the prefix ``MOE_HEALTH_`` (``MOE_HEALTH_DATABASE_URL``,
``MOE_HEALTH_TRUSTED_ISSUERS='{"https://ehr.example.org": "https://ehr.example.org/jwks"}'``).
Nested values (thresholds, issuers, lists) are JSON. ``get_settings()`` caches one
instance; tests build their own ``Settings(...)`` and override the dependency.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from pydantic import (
    AliasChoices,
    BaseModel,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from moe_core.modalities import TASKS

__all__ = [
    "ENV_PREFIX",
    "RiskThresholds",
    "Settings",
    "default_data_dir",
    "default_model_path",
    "get_settings",
]

ENV_PREFIX = "MOE_HEALTH_"
PACKAGE_DIR = Path(__file__).resolve().parent


def default_data_dir() -> Path:
    """Per-user data folder (``$XDG_DATA_HOME/moe-health``, else ``~/.local/share/moe-health``)."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "moe-health"


def default_model_path() -> Path:
    """The demo checkpoint shipped inside the package (synthetic, not for clinical use)."""
    return PACKAGE_DIR / "model" / "demo"


class RiskThresholds(BaseModel):
    """Risk >= ``warning`` gives a warning card, risk >= ``critical`` a critical one."""

    warning: float = Field(ge=0.0, le=1.0)
    critical: float = Field(ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _ordered(self) -> RiskThresholds:
        if self.warning > self.critical:
            raise ValueError(
                f"warning threshold {self.warning} must not exceed critical {self.critical}"
            )
        return self


# Defaults sit near 2x and 4x the usual ICU prevalence of each outcome (mortality ~10 %,
# stay > 7 days ~30 %, 30-day readmission ~12 %); sites tune them to their alert budget.
_DEFAULT_THRESHOLDS: dict[str, RiskThresholds] = {
    "mortality": RiskThresholds(warning=0.15, critical=0.35),
    "long_los": RiskThresholds(warning=0.40, critical=0.70),
    "readmission": RiskThresholds(warning=0.20, critical=0.40),
}

class Settings(BaseSettings):
    """Everything the CDS Hooks service can be told, with safe embedded defaults."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        populate_by_name=True,
    )

    # --- model -----------------------------------------------------------------------
    model_path: Path = Field(
        default_factory=default_model_path,
        description="Checkpoint folder to serve; default: the synthetic demo model.",
    )
    model_device: str = Field(default="cpu", description="torch device for inference.")
    thresholds: dict[str, RiskThresholds] = Field(
        default_factory=lambda: dict(_DEFAULT_THRESHOLDS),
        description="Per task key: warning/critical risk thresholds (JSON).",
    )
    lookback_days: int = Field(
        default=30, ge=1, le=365,
        description="Prefetch window for Observations/notes/images: today() - N days.",
    )
    torch_threads: int = Field(
        default=1, ge=0, le=256,
        description="Intra-op CPU threads for inference (0 = leave torch's default). One "
        "thread gives the steadiest latency on small or shared hosts; scale out with workers.",
    )
    embedding_cache_size: int = Field(
        default=2048, ge=0, description="Note and image embeddings kept in memory (each)."
    )
    window_hours: int = Field(
        default=48, ge=1, le=240,
        description="Observation window after admission the model reads (the paper's 48 h).",
    )
    writeback: bool = Field(
        default=False,
        description="Return RiskAssessment creates as systemActions for every call "
        "(an EHR can also ask per call with the request extension).",
    )

    # --- security --------------------------------------------------------------------
    auth_disabled: bool = Field(
        default=False, description="Accept calls without a JWT. Local demos only."
    )
    trusted_issuers: dict[str, str] = Field(
        default_factory=dict,
        description="JWT issuer -> JWKS location (https URL or a local JSON file path).",
    )
    jwt_algorithms: list[str] = Field(
        default_factory=lambda: ["ES384", "RS384", "ES256", "RS256", "ES512", "RS512", "PS384"],
        description="Accepted asymmetric JWS algorithms (symmetric and 'none' always refused).",
    )
    jwt_leeway_s: int = Field(default=30, ge=0, le=300)
    jwt_max_age_s: int = Field(default=600, ge=30, description="Oldest accepted iat.")
    jwks_cache_ttl_s: int = Field(default=300, ge=0)
    jwks_min_refresh_s: float = Field(
        default=60.0, ge=0,
        description="Least time between two JWKS reloads forced by an unknown 'kid'.",
    )
    public_base_url: str | None = Field(
        default=None,
        description="Base URL the EHR calls (for the JWT 'aud' check behind a proxy); "
        "default: the URL of the request itself.",
    )
    cors_origins: list[str] = Field(default_factory=list)
    pseudonym_key: SecretStr | None = Field(
        default=None,
        description="HMAC key for patient pseudonyms in logs and the audit table; "
        "default: a random key created once in the data folder.",
    )

    # --- persistence -----------------------------------------------------------------
    data_dir: Path = Field(default_factory=default_data_dir)
    database_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("database_url", f"{ENV_PREFIX}DATABASE_URL", "DATABASE_URL"),
        description="SQLAlchemy URL (MOE_HEALTH_DATABASE_URL or DATABASE_URL); default: a "
        "SQLite file in data_dir.",
    )

    # --- limits ----------------------------------------------------------------------
    max_request_bytes: int = Field(default=32 * 1024 * 1024, ge=1024)
    request_timeout_s: float = Field(default=30.0, gt=0)
    fhir_connect_timeout_s: float = Field(default=3.0, gt=0)
    fhir_read_timeout_s: float = Field(default=10.0, gt=0)
    fhir_total_timeout_s: float = Field(default=20.0, gt=0, le=120)
    fhir_max_pages: int = Field(default=20, ge=1)
    fhir_max_resources: int = Field(default=20_000, ge=1)
    fhir_page_size: int = Field(default=500, ge=1, le=5000)
    fhir_max_concurrency: int = Field(default=4, ge=1, le=32)

    # --- server ----------------------------------------------------------------------
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=1, le=65535)
    log_json: bool = True
    log_level: str = "INFO"

    @field_validator("thresholds")
    @classmethod
    def _known_tasks(cls, value: dict[str, RiskThresholds]) -> dict[str, RiskThresholds]:
        known = {t.key for t in TASKS}
        unknown = set(value) - known
        if unknown:
            raise ValueError(
                f"thresholds for unknown tasks {sorted(unknown)}; known: {sorted(known)}"
            )
        return {**_DEFAULT_THRESHOLDS, **value}

    @field_validator("jwt_algorithms")
    @classmethod
    def _asymmetric_only(cls, value: list[str]) -> list[str]:
        bad = [a for a in value if a.lower() == "none" or a.upper().startswith("HS")]
        if bad:
            raise ValueError(f"symmetric or unsigned JWT algorithms are not allowed: {bad}")
        return value

    @property
    def resolved_database_url(self) -> str:
        """``database_url`` or the default SQLite file inside ``data_dir``."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.data_dir / 'moe_health.db'}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (environment + ``.env``), read once."""
    return Settings()
