"""Settings refuse what ``deploy/`` leaves for the operator to fill in."""

from __future__ import annotations

import secrets

import pytest

from cloud.errors import ConfigError
from cloud.settings import PLACEHOLDER, load_settings

KEY = secrets.token_urlsafe(48)
PASSWORD = secrets.token_urlsafe(16)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("EDGEWATCH_CLOUD_"):
            monkeypatch.delenv(name)


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("mqtt_password", PLACEHOLDER),
        ("influx_token", PLACEHOLDER),
        ("influx_password", PLACEHOLDER),
        ("database_url", f"postgresql+psycopg://edgewatch:{PLACEHOLDER}@pg:5432/edgewatch"),
    ],
)
@pytest.mark.parametrize("environment", ["production", "development"])
def test_a_placeholder_left_in_a_secret_is_refused_by_name(
    setting: str, value: str, environment: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(environment=environment, secret_key=KEY, **{setting: value})
    message = str(caught.value)
    assert f"EDGEWATCH_CLOUD_{setting.upper()}" in message and PLACEHOLDER in message
    assert "edgewatch:" not in message  # the URL itself is not echoed


def test_every_placeholder_is_named_at_once() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(
            environment="production", secret_key=KEY, mqtt_password=PLACEHOLDER,
            influx_token=PLACEHOLDER,
        )  # fmt: skip
    assert "EDGEWATCH_CLOUD_MQTT_PASSWORD" in str(caught.value)
    assert "EDGEWATCH_CLOUD_INFLUX_TOKEN" in str(caught.value)


def test_real_values_pass() -> None:
    settings = load_settings(
        environment="production", secret_key=KEY, mqtt_password=PASSWORD,
        database_url="postgresql+psycopg://edgewatch:pw@pg:5432/edgewatch",
    )  # fmt: skip
    assert settings.mqtt_password is not None
    assert settings.mqtt_password.get_secret_value() == PASSWORD


def test_the_placeholder_secret_key_is_refused_in_production() -> None:
    with pytest.raises(ConfigError, match="secret_key"):
        load_settings(environment="production", secret_key=PLACEHOLDER)


def test_alerts_must_be_kept_at_least_as_long_as_every_score() -> None:
    with pytest.raises(ConfigError, match="risk_alert_history_days"):
        load_settings(risk_history_days=90, risk_alert_history_days=30)
    assert load_settings(risk_history_days=30, risk_alert_history_days=30).risk_history_days == 30
