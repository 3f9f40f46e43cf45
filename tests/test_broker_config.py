"""`DIAGNOXIX_BROKER` / `--broker`: only Redis URLs, a clear error otherwise, and the password
never repeated, in an error, a log line or the settings' repr."""

from __future__ import annotations

import pytest

from diagnoxix.config import ConfigError, Settings, settings_from_env
from diagnoxix.config_broker import broker_target

from .processes import run_cli

PASSWORD = "pa55-w0rd-in-the-url"


@pytest.mark.parametrize(
    ("raw", "target"),
    [
        ("", "in-process"),
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        (f"redis://:{PASSWORD}@redis.internal/2", "redis://redis.internal:6379/2"),
        (f"rediss://notify:{PASSWORD}@[2001:db8::1]:6380", "rediss://[2001:db8::1]:6380/0"),
        (f"unix:///run/redis/redis.sock?db=1&password={PASSWORD}", "unix:///run/redis/redis.sock"),
    ],
)
def test_a_redis_url_is_taken_and_shown_without_its_password(raw: str, target: str) -> None:
    settings = settings_from_env({"DIAGNOXIX_BROKER": raw})
    assert settings.broker_url == raw
    assert broker_target(settings.broker_url) == target
    assert PASSWORD not in repr(settings)


@pytest.mark.parametrize(
    "raw",
    [
        f"http://:{PASSWORD}@redis.internal:6379",
        f"{PASSWORD}@redis.internal",
        f"redis://:{PASSWORD}@/0",
        f"redis://:{PASSWORD}@redis.internal:99999/0",
        f"redis://:{PASSWORD}@redis.internal/first",
        f"redis://:{PASSWORD}@redis.internal/0?socket_timeout=soon",
        f"unix://:{PASSWORD}@",
    ],
)
def test_anything_else_is_refused_without_repeating_it(raw: str) -> None:
    with pytest.raises(ConfigError) as refused:
        settings_from_env({"DIAGNOXIX_BROKER": raw})
    assert "DIAGNOXIX_BROKER" in str(refused.value)
    assert PASSWORD not in str(refused.value)


def test_the_prefix_is_a_plain_name() -> None:
    assert settings_from_env({"DIAGNOXIX_BROKER_PREFIX": "clinic-north"}).broker_prefix == "clinic-north"
    assert Settings().broker_prefix == "diagnoxix"
    with pytest.raises(ConfigError, match="DIAGNOXIX_BROKER_PREFIX"):
        settings_from_env({"DIAGNOXIX_BROKER_PREFIX": "a b*"})


async def test_a_bad_broker_flag_stops_run_py_with_a_message_and_no_password() -> None:
    done = await run_cli("--broker", f"memcached://:{PASSWORD}@cache:11211")
    assert done.returncode == 2
    assert "--broker" in done.stderr
    assert "redis://" in done.stderr
    assert PASSWORD not in done.stderr + done.stdout
