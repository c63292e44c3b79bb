"""``CRMFLOW_EXTRA_CA_FILE``: checked at start-up, added to (never replacing)
the system's trust store."""

from __future__ import annotations

import ssl

import pytest

from crmflow.config import load_settings
from crmflow.errors import ConfigError
from crmflow.providers._tls import client_context


def test_a_missing_ca_file_stops_start_up(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CRMFLOW_EXTRA_CA_FILE", str(tmp_path / "nope.pem"))
    with pytest.raises(ConfigError, match="CRMFLOW_EXTRA_CA_FILE"):
        load_settings()
    monkeypatch.setenv("CRMFLOW_EXTRA_CA_FILE", "")
    assert load_settings().extra_ca_file is None


def test_the_extra_ca_is_trusted_besides_the_system_store(tls_cert):
    system = client_context(None)
    extended = client_context(tls_cert.cert_file)
    assert extended.verify_mode is ssl.CERT_REQUIRED
    assert extended.check_hostname
    assert len(extended.get_ca_certs()) == len(system.get_ca_certs()) + 1


def test_a_file_without_certificates_is_a_config_error(tmp_path):
    bogus = tmp_path / "bogus.pem"
    bogus.write_text("not a certificate\n")
    with pytest.raises(ConfigError, match="cannot be loaded"):
        client_context(bogus)
