"""Settings from the environment: every variable read through one table, each one documented."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from diagnoxix.config import ENV_SETTINGS, ConfigError, Settings, settings_from_env

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = ROOT / "docs" / "configuration.md"
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_every_variable_reaches_its_setting() -> None:
    settings = settings_from_env(
        {
            "DIAGNOXIX_PORT": "8123",
            "DIAGNOXIX_DEV": "yes",
            "DIAGNOXIX_ALLOWED_ORIGINS": "https://portal.example.org/, https://staff.example.org",
            "DIAGNOXIX_TOKEN_TTL": "600",
            "DIAGNOXIX_SQLITE_SYNCHRONOUS": "normal",
            "DIAGNOXIX_RETENTION_DAYS": "low=7",
            "DIAGNOXIX_WS_HEARTBEAT": "12.5",
            "DIAGNOXIX_LINK_HOSTS": "portal.example.org, xn--klinik-mnchen-5ob.example",
            "DIAGNOXIX_DEFAULT_LOCALE": "de",
        }
    )
    assert settings.link_hosts == ("portal.example.org", "xn--klinik-mnchen-5ob.example")
    assert settings.default_locale == "de"
    assert settings.port == 8123
    assert settings.dev is True
    assert settings.allowed_origins == ("https://portal.example.org", "https://staff.example.org")
    assert settings.token_ttl_seconds == 600
    assert settings.sqlite_synchronous == "NORMAL"
    assert settings.retention_days[0] == ("low", 7)
    assert dict(settings.retention_days)["critical"] == 730  # not named: kept
    assert settings.ws_heartbeat_seconds == 12.5
    assert settings_from_env({}) == Settings()


@pytest.mark.parametrize(
    ("variable", "raw", "says"),
    [
        ("DIAGNOXIX_PORT", "seventy", "whole number"),
        ("DIAGNOXIX_PORT", "70000", "between 0 and 65535"),
        ("DIAGNOXIX_DEV", "maybe", "true or false"),
        ("DIAGNOXIX_SECRET_KEY", "short", "at least 32"),
        ("DIAGNOXIX_TOKEN_TTL", str(8 * 24 * 3600), "between 10 and"),
        ("DIAGNOXIX_SQLITE_SYNCHRONOUS", "OFF", "FULL, EXTRA or NORMAL"),
        ("DIAGNOXIX_RETENTION_DAYS", "urgent=3", "priority=days"),
        ("DIAGNOXIX_WS_HEARTBEAT", "0.1", "at least 1.0"),
        ("DIAGNOXIX_LOG_LEVEL", "bogus", "DEBUG, INFO, WARNING, ERROR, CRITICAL"),
        ("DIAGNOXIX_METRICS_ALLOW", "10.0.0.0/8,loopback", "addresses or CIDR ranges"),
        ("DIAGNOXIX_METRICS_TOKEN", "short", "at least 32"),
        ("DIAGNOXIX_LINK_HOSTS", "portal.example.org,https://evil.example", "lowercase host names"),
        ("DIAGNOXIX_DEFAULT_LOCALE", "fr", "en, de, es"),
    ],
)
def test_a_bad_value_names_the_variable_and_what_it_takes(variable: str, raw: str, says: str) -> None:
    with pytest.raises(ConfigError) as refused:
        settings_from_env({variable: raw})
    assert variable in str(refused.value)
    assert says in str(refused.value)


def test_every_variable_is_documented_in_the_reference() -> None:
    """docs/configuration.md is generated from ENV_SETTINGS (tests/test_reference.py keeps it
    current); here: each entry names a real setting and says what it is for and what it accepts."""
    documented = set(re.findall(r"`(DIAGNOXIX_[A-Z_]+)`", REFERENCE.read_text(encoding="utf-8")))
    read = {setting.variable for setting in ENV_SETTINGS}
    assert read <= documented
    fields = set(Settings.__dataclass_fields__)
    assert {setting.field for setting in ENV_SETTINGS} <= fields
    assert len(read) == len(ENV_SETTINGS), "a variable is listed twice"
    for setting in ENV_SETTINGS:
        assert setting.help, f"{setting.variable}: say what it is for (EnvSetting help)"
        assert setting.accepts, f"{setting.variable}: its parser should say what it accepts (env_text.Reader)"


def test_the_docs_name_no_variable_the_server_does_not_read() -> None:
    """A variable renamed or removed in the code must not live on in the README or docs/."""
    read = {setting.variable for setting in ENV_SETTINGS}
    for document in DOCUMENTS:
        # `$DIAGNOXIX_API_KEY` in the examples is the reader's own shell variable, not a setting.
        named = set(re.findall(r"(?<![$\w])(DIAGNOXIX_[A-Z_]+)", document.read_text(encoding="utf-8")))
        assert named <= read, f"{document.name} names {sorted(named - read)}"
