"""Typed settings of the cloud service, validated at start-up.

Settings come from keyword arguments (tests), then ``EDGEWATCH_CLOUD_*`` environment
variables, then an optional env file; nothing is read at import time. A bad value fails
with :class:`cloud.errors.ConfigError` naming the setting (``EDGEWATCH_CLOUD_<NAME>``) and
what was expected. Placeholder secrets are refused outside ``environment=development``,
and a value still holding the deployment files' :data:`PLACEHOLDER` (a password, a token,
a database URL) is refused everywhere.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from cloud.errors import ConfigError

ENV_PREFIX = "EDGEWATCH_CLOUD_"
PLACEHOLDER_SECRET = "development-only-secret-change-me"  # noqa: S105 - refused in production
PLACEHOLDER = "REPLACE-ME"
"""What ``deploy/`` writes for every secret the operator must provide; refused at start-up."""
DEFAULT_MODELS_DIR = Path(__file__).resolve().parent.parent / "models" / "artifacts"
"""The models shipped with EdgeWatch (``models/artifacts`` beside this package)."""


class Settings(BaseSettings):
    """Every knob of ``edgewatch-cloud``; see ``deploy/cloud/cloud.example.env``."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, extra="forbid", frozen=True, validate_default=True
    )

    environment: Literal["development", "production"] = "development"
    secret_key: SecretStr = Field(
        SecretStr(PLACEHOLDER_SECRET),
        description="Signs bearer tokens (HS256); at least 32 characters outside development.",
    )
    token_ttl_s: int = Field(3600, ge=60, le=86_400 * 7)

    # --- relational registry (SQLAlchemy URL) ---
    database_url: str = "sqlite:///edgewatch-cloud.db"

    # --- time-series store ---
    tsdb: Literal["sqlite", "influxdb"] = "sqlite"
    tsdb_sqlite_path: Path = Path("edgewatch-ts.db")
    influx_url: str = "http://127.0.0.1:8086"
    influx_database: str = Field("edgewatch", pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")
    influx_token: SecretStr | None = Field(None, description="InfluxDB 2.x/3.x token (v1 API)")
    influx_username: str | None = None
    influx_password: SecretStr | None = None
    influx_retention: str = Field(
        "400d", pattern=r"^(INF|[0-9]+[hdw])$", description="raw points kept this long"
    )
    influx_rollup_retention: str = Field("INF", pattern=r"^(INF|[0-9]+[hdw])$")
    influx_batch_points: int = Field(5000, ge=1, le=100_000)
    influx_timeout_s: float = Field(10.0, gt=0, le=300)
    influx_manage_schema: bool = Field(
        True, description="create the database, retention policies and rollups at start-up"
    )

    # --- ingest ---
    mqtt_host: str = "127.0.0.1"
    mqtt_port: int = Field(1883, ge=1, le=65_535)
    mqtt_username: str | None = None
    mqtt_password: SecretStr | None = None
    mqtt_tls: bool = False
    mqtt_ca_file: Path | None = None
    ingest_share_group: str = Field("ingest", pattern=r"^[A-Za-z0-9_-]{1,64}$")
    broker_auth_key: SecretStr | None = Field(
        None,
        description="shared with an EMQX cluster that authenticates MQTT logins through "
        "POST /v1/broker/emqx/authenticate (at least 32 characters); unset: no endpoint",
    )
    ingest_max_future_s: float = Field(
        300.0, ge=0, description="records stamped further ahead of the cloud's clock are rejected"
    )
    ingest_registry_refresh_s: float = Field(30.0, gt=0)
    ingest_linger_ms: float = Field(
        5.0,
        ge=0,
        le=1000,
        description="after a batch arrives, a worker waits this long for more to store with "
        "it in one write: fewer, larger writes at moderate load, for as much added latency",
    )
    ingest_writes_in_flight: int = Field(
        3,
        ge=1,
        le=16,
        description="store writes one ingest worker keeps in flight at once: a batch that "
        "arrives during a slow write (the store busy) goes in another write instead of "
        "waiting for that one",
    )

    # --- API ---
    api_host: str = "127.0.0.1"
    api_port: int = Field(8000, ge=1, le=65_535)

    # --- dashboard (/ui) ---
    web_secure_cookies: bool | None = Field(
        None,
        description="Secure flag on the dashboard's cookies: unset, when the request came "
        "over HTTPS; true, always (behind a proxy that terminates TLS); false, never",
    )

    # --- gateway credentials ---
    gateway_credential_grace_s: int = Field(
        86_400,
        ge=0,
        le=30 * 86_400,
        description="after a rotation, the previous credential stays valid this long",
    )

    # --- risk scoring and work orders ---
    public_url: str = Field(
        "http://127.0.0.1:8000", description="base URL of this service, for links in orders"
    )
    models_dir: Path = Field(
        DEFAULT_MODELS_DIR, description="risk models: <asset>/ detector + <asset>/risk/"
    )
    scorer_interval_s: float = Field(
        3600.0, ge=10, le=86_400, description="every device is scored this often"
    )
    scorer_poll_s: float = Field(
        2.0, gt=0, le=300, description="how often anomaly and alarm requests are picked up"
    )
    scorer_baseline_days: float = Field(
        14.0,
        gt=0,
        le=365,
        description="a device's first days of windows (after it is registered or repaired) "
        "are its baseline until a rolling one exists",
    )
    scorer_baseline_lag_days: float = Field(
        14.0, ge=0, le=365, description="the rolling baseline ends this many days back"
    )
    scorer_baseline_span_days: float = Field(
        30.0, ge=1, le=365, description="the rolling baseline spans this many days"
    )
    scorer_baseline_refresh_days: float = Field(
        7.0, ge=1, le=365, description="the rolling baseline is rebuilt this often"
    )
    risk_history_days: float = Field(
        90.0, ge=1, le=3650, description="every risk score is kept this long, then deleted"
    )
    risk_alert_history_days: float = Field(
        730.0,
        ge=1,
        le=3650,
        description="scores over their threshold (alerts) are kept this long instead",
    )
    risk_thresholds: dict[str, float] = Field(
        default_factory=dict,
        description='P(failure within the alert horizon) that opens an order, per asset type '
        '(JSON, e.g. {"compressor": 0.4}); default: the risk model\'s own threshold',
    )
    workorder_cooldown_h: float = Field(72.0, ge=0, le=24 * 365)
    workorder_alarm_severities: frozenset[str] = Field(
        frozenset({"critical", "major"}),
        description="raised local alarms of these severities open an order (a visit)",
    )
    fault_catalogue: Path | None = Field(
        None, description="YAML file of failure codes, skills and parts over the defaults"
    )
    delivery_max_age_h: float = Field(
        72.0, gt=0, le=24 * 30, description="a delivery is retried this long, then failed"
    )
    delivery_timeout_s: float = Field(10.0, gt=0, le=120)
    delivery_lease_s: float = Field(
        60.0, gt=0, le=3600, description="a claimed delivery is retried by another worker after"
    )
    delivery_idle_s: float = Field(
        0.5, gt=0, le=60, description="how often an idle delivery worker looks for new messages"
    )

    # --- energy reports (cloud.reports) ---
    report_grid_factor: float = Field(
        0.4,
        ge=0,
        le=2,
        description="kg CO2e per kWh of the grid, for sites without a factor of their own",
    )
    report_grid_factors: dict[str, float] = Field(
        default_factory=dict,
        description='kg CO2e per kWh per site id (JSON, e.g. {"<site id>": 0.42})',
    )
    report_baseline: bool = Field(
        True, description="fit weather-normalised CalTRACK baselines (eemeter) and savings"
    )
    report_baseline_granularity: Literal["daily", "hourly", "auto"] = Field(
        "daily", description="the CalTRACK model fitted (auto: hourly when the data allows)"
    )
    report_weather_dir: Path | None = Field(
        None,
        description="outdoor temperature per site from <dir>/<site id>.csv (time,temperature_c);"
        " sites without a file use their sensors' ambient_temp",
    )
    report_delay_h: float = Field(
        6.0,
        ge=0,
        le=24 * 14,
        description="the schedule makes a month's report this long after the month ended at "
        "the client's last site (late data from buffering gateways)",
    )
    report_poll_s: float = Field(
        300.0, ge=1, le=86_400, description="how often the report schedule looks for due months"
    )
    report_retry_s: float = Field(
        900.0,
        ge=1,
        le=86_400,
        description="a failed scheduled report is retried after this, doubling up to a day",
    )

    @model_validator(mode="after")
    def _lease_outlasts_a_delivery(self) -> Settings:
        # A delivery is at most a lookup and a create (or update) at the desk, each up to
        # delivery_timeout_s; a lease that runs out mid-delivery lets a second worker
        # deliver the same message.
        if self.delivery_lease_s < 3 * self.delivery_timeout_s:
            raise ValueError(
                f"delivery_lease_s: {self.delivery_lease_s:g} s is shorter than three "
                f"delivery timeouts ({3 * self.delivery_timeout_s:g} s): another worker "
                "could deliver a message while the first still is"
            )
        return self

    @model_validator(mode="after")
    def _alerts_outlive_scores(self) -> Settings:
        if self.risk_alert_history_days < self.risk_history_days:
            raise ValueError(
                f"risk_alert_history_days: {self.risk_alert_history_days:g} is shorter than "
                f"risk_history_days ({self.risk_history_days:g}); alerts are kept at least "
                "as long as every score"
            )
        return self

    @field_validator("broker_auth_key")
    @classmethod
    def _broker_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 32:
            raise ValueError("at least 32 characters (e.g. openssl rand -base64 33)")
        return value

    @model_validator(mode="after")
    def _production_secrets(self) -> Settings:
        if self.environment != "development":
            key = self.secret_key.get_secret_value()
            if key == PLACEHOLDER_SECRET or len(key) < 32:
                raise ValueError(
                    "secret_key: the development placeholder or a key shorter than 32 "
                    "characters is refused outside development"
                )
        return self

    @model_validator(mode="after")
    def _no_placeholders(self) -> Settings:
        left = []
        for name in type(self).model_fields:
            value = getattr(self, name)
            text = value.get_secret_value() if isinstance(value, SecretStr) else value
            if isinstance(text, str) and PLACEHOLDER in text:
                left.append(ENV_PREFIX + name.upper())
        if left:
            raise ValueError(
                f"{', '.join(left)}: still the deployment placeholder {PLACEHOLDER}; "
                "set the real value (see deploy/README.md)"
            )
        return self

    @field_validator("report_grid_factors")
    @classmethod
    def _grid_factors(cls, value: dict[str, float]) -> dict[str, float]:
        for site_id, factor in value.items():
            if not 0 <= factor <= 2:
                raise ValueError(f"{site_id}: {factor} is not between 0 and 2 kg CO2e/kWh")
        return value

    @field_validator("report_weather_dir")
    @classmethod
    def _weather_dir(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_dir():
            raise ValueError(f"{value} is not a directory")
        return value

    @field_validator("risk_thresholds")
    @classmethod
    def _probabilities(cls, value: dict[str, float]) -> dict[str, float]:
        for asset, p in value.items():
            if not 0 < p < 1:
                raise ValueError(f"{asset}: {p} is not a probability in (0, 1)")
        return value


def load_settings(env_file: Path | None = None, **overrides: Any) -> Settings:
    """Settings from ``overrides``, the environment and ``env_file``; a
    :class:`ConfigError` naming the setting when a value is wrong."""
    try:
        if env_file is not None:
            return Settings(_env_file=env_file, **overrides)  # type: ignore[call-arg]
        return Settings(**overrides)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"]) or "settings"
        key = f"{ENV_PREFIX}{loc.upper()}" if first["loc"] else loc
        raise ConfigError(key, first["msg"]) from None
