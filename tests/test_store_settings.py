"""Choosing the store: DIAGNOXIX_STORE / --store, checked without ever echoing a password."""

from __future__ import annotations

from pathlib import Path

import pytest

from diagnoxix.config import ConfigError, Settings, settings_from_env, store_label
from diagnoxix.store.opening import backup_store
from diagnoxix.store.protocols import BackupError

SECRET = "s3cr3t-pa55"


@pytest.mark.parametrize(
    "raw",
    [
        f"mysql://notify:{SECRET}@db/notify",
        f"notify:{SECRET}@db/notify",
        f"postgresql://notify:{SECRET}@db:notaport/notify",
        f"postgresql://notify:{SECRET}@db:5432/",
    ],
)
def test_a_bad_store_url_is_refused_without_its_password(raw: str) -> None:
    with pytest.raises(ConfigError) as caught:
        settings_from_env({"DIAGNOXIX_STORE": raw})
    assert "DIAGNOXIX_STORE" in str(caught.value)
    assert SECRET not in str(caught.value)


def test_a_postgresql_url_is_taken_and_shown_without_credentials() -> None:
    settings = settings_from_env({"DIAGNOXIX_STORE": f"postgresql://notify:{SECRET}@db.internal:5433/notify"})
    assert settings.store_url.endswith("/notify")
    assert store_label(settings) == "postgresql://db.internal:5433/notify"
    assert store_label(Settings(db_path=Path("/srv/n.sqlite3"))) == "/srv/n.sqlite3"
    assert settings_from_env({"DIAGNOXIX_STORE": ""}).store_url == ""


def test_backup_and_restore_are_for_the_sqlite_file(tmp_path: Path) -> None:
    settings = Settings(store_url="postgresql://db/notify")
    with pytest.raises(BackupError, match="pg_dump"):
        backup_store(settings, tmp_path / "b.sqlite3")
