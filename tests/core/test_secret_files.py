"""Secrets come back byte for byte: what a user put in a password file is what the broker is sent."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bus.secrets import SecretError, read_secret


@settings(max_examples=60, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=64)
       .map(str.strip).filter(bool))
def test_a_file_secret_is_returned_exactly_with_carriage_returns_and_unicode(tmp_path_factory, secret):
    path = tmp_path_factory.mktemp("s") / "pass"
    path.write_bytes(secret.encode("utf-8") + b"\n")
    assert read_secret(path) == secret


def test_a_carriage_return_inside_a_password_survives(tmp_path):
    path = tmp_path / "pass"
    path.write_bytes(b"a\rb\r\n")
    assert read_secret(path) == "a\rb"


def test_unreadable_and_non_utf8_files_are_named(tmp_path, monkeypatch):
    with pytest.raises(SecretError, match="cannot read .*missing"):
        read_secret(tmp_path / "missing")
    bad = tmp_path / "latin1"
    bad.write_bytes(b"caf\xe9")
    with pytest.raises(SecretError, match="latin1 is not UTF-8"):
        read_secret(bad)
    monkeypatch.delenv("WATTBUS_TEST_SECRET", raising=False)
    assert read_secret(env="WATTBUS_TEST_SECRET") is None
    with pytest.raises(SecretError, match="WATTBUS_TEST_SECRET is not set"):
        read_secret(env="WATTBUS_TEST_SECRET", env_required=True)
