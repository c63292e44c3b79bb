from __future__ import annotations

import pytest

from crmflow.config import load_settings, mask_url_password
from crmflow.errors import ConfigError
from crmflow.store.crypto import generate_key_entry


def test_defaults_use_sqlite_in_the_data_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    s = load_settings(data_dir=tmp_path / "d")
    assert s.effective_database_url == f"sqlite:///{tmp_path}/d/crmflow.db"
    assert s.effective_admin_database_url == s.effective_database_url


def test_environment_variables_are_read(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CRMFLOW_PORT", "9001")
    monkeypatch.setenv("CRMFLOW_DATABASE_URL", "postgresql://app:pw@db/crm")
    s = load_settings()
    assert s.port == 9001
    assert s.database_url == "postgresql://app:pw@db/crm"


def test_dotenv_file_is_read(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("CRMFLOW_PORT=9002\n")
    assert load_settings().port == 9002


@pytest.mark.parametrize(
    ("env", "value", "named"),
    [
        ("CRMFLOW_PORT", "eighty", "CRMFLOW_PORT"),
        ("CRMFLOW_DATABASE_URL", "mysql://x", "CRMFLOW_DATABASE_URL"),
        ("CRMFLOW_ENCRYPTION_KEYS", "k1:short", "CRMFLOW_ENCRYPTION_KEYS"),
        ("CRMFLOW_SESSION_SECRET", "too-short", "CRMFLOW_SESSION_SECRET"),
        ("CRMFLOW_PUBLIC_BASE_URL", "not a url", "CRMFLOW_PUBLIC_BASE_URL"),
    ],
)
def test_malformed_settings_name_the_variable(monkeypatch, tmp_path, env, value, named):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(env, value)
    with pytest.raises(ConfigError, match=named):
        load_settings()


def test_missing_required_settings_are_named(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    s = load_settings()
    with pytest.raises(ConfigError) as info:
        s.require("encryption_keys", "session_secret")
    assert "CRMFLOW_ENCRYPTION_KEYS" in str(info.value)
    assert "CRMFLOW_SESSION_SECRET" in str(info.value)


def test_masked_view_hides_secrets(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    key = generate_key_entry("k1")
    s = load_settings(
        encryption_keys=key,
        session_secret="x" * 40,
        google_client_secret="gsecret-value",
        database_url="postgresql://app:dbpassword@db/crm",
    )
    shown = "\n".join(f"{k}={v}" for k, v in s.masked().items())
    for secret in (key, "x" * 40, "gsecret-value", "dbpassword"):
        assert secret not in shown
    assert "CRMFLOW_GOOGLE_CLIENT_SECRET=********** (set)" in shown
    assert "CRMFLOW_DATABASE_URL=postgresql://app:****@db/crm" in shown
    assert "gsecret-value" not in repr(s)


def test_mask_url_password():
    assert mask_url_password("postgresql://u:p@h/d") == "postgresql://u:****@h/d"
    assert mask_url_password("sqlite:///x.db") == "sqlite:///x.db"
