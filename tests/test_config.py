"""Configuration: environment variables, then the TOML file over them."""

from __future__ import annotations

from pathlib import Path

import pytest

from hsmkms.config import DEFAULT_ACCOUNT_ID, DEFAULT_REGION, load_settings


def test_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings({})
    assert settings.data_dir == Path(".hsmkms")
    assert settings.account_id == DEFAULT_ACCOUNT_ID and settings.region == DEFAULT_REGION
    assert settings.database_path == Path(".hsmkms/hsmkms.db")
    assert settings.token_label == "hsmkms"


def test_environment_then_toml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    env = {
        "HSMKMS_DATA_DIR": str(tmp_path / "d"),
        "HSMKMS_ACCOUNT_ID": "444455556666",
        "HSMKMS_REGIONS": "eu-west-1, eu-central-1",
        "HSMKMS_TOKEN_LABEL": "from-env",
    }
    settings = load_settings(env)
    assert settings.regions == ("eu-west-1", "eu-central-1") and settings.region == "eu-west-1"
    assert settings.token_label == "from-env" and settings.account_id == "444455556666"
    (tmp_path / "hsmkms.toml").write_text('token_label = "from-toml"\n')
    assert load_settings(env).token_label == "from-toml"
    assert load_settings(env).account_id == "444455556666"


def test_pin_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    pin_file = tmp_path / "pin"
    pin_file.write_text("from-file\n")
    assert load_settings({"HSMKMS_PIN_FILE": str(pin_file)}).read_pin() == "from-file"
    assert load_settings({"HSMKMS_PIN": "direct"}).read_pin() == "direct"
    assert "direct" not in repr(load_settings({"HSMKMS_PIN": "direct"}))


def test_unsupported_database_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="sqlite") as caught:
        load_settings({"HSMKMS_DATABASE_URL": "mysql://user:hunter2@db/hsmkms"})
    assert "hunter2" not in str(caught.value)
    url = "postgresql://kms:hunter2@db.internal:5432/hsmkms"
    settings = load_settings({"HSMKMS_DATABASE_URL": url})
    assert settings.database_url == url
    assert settings.database_shown == "postgresql://kms@db.internal:5432/hsmkms"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"HSMKMS_ACCOUNT_ID": "12345"}, "HSMKMS_ACCOUNT_ID: an AWS account id is 12 digits"),
        ({"HSMKMS_REGIONS": "us-east-1,mars-north-1"}, "HSMKMS_REGIONS: unknown region"),
        ({"HSMKMS_PKCS11_LIB": "/nonexistent/libp11.so"}, "HSMKMS_PKCS11_LIB: no PKCS#11 module"),
        ({"HSMKMS_SESSION_POOL_SIZE": "many"}, "HSMKMS_SESSION_POOL_SIZE: "),
        ({"HSMKMS_MAINTENANCE_SECONDS": "-1"}, "HSMKMS_MAINTENANCE_SECONDS: "),
    ],
)
def test_a_bad_value_is_one_line_naming_the_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, env: dict[str, str], message: str
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError) as caught:
        load_settings(env)
    assert str(caught.value).startswith(message)
    assert "\n" not in str(caught.value)


def test_toml_values_are_typed_and_checked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "hsmkms.toml").write_text('regions = "eu-west-1"\nsession_pool_size = 3\n')
    settings = load_settings({})
    assert settings.regions == ("eu-west-1",) and settings.session_pool_size == 3
    (tmp_path / "hsmkms.toml").write_text('account_id = "abc"\n')
    with pytest.raises(ValueError, match=r"^HSMKMS_ACCOUNT_ID: "):
        load_settings({})
