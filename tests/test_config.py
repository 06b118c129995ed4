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
    assert settings.token.label == "hsmkms"


def test_environment_then_toml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    env = {
        "HSMKMS_DATA_DIR": str(tmp_path / "d"),
        "HSMKMS_ACCOUNT_ID": "444455556666",
        "HSMKMS_REGIONS": "eu-west-1, eu-central-1",
        "HSMKMS_TOKEN_LABEL": "from-env",
    }
    settings = load_settings(env)
    assert (
        settings.regions.served == ("eu-west-1", "eu-central-1") and settings.region == "eu-west-1"
    )
    assert settings.token.label == "from-env" and settings.account_id == "444455556666"
    (tmp_path / "hsmkms.toml").write_text('token_label = "from-toml"\n')
    assert load_settings(env).token.label == "from-toml"
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
    assert settings.store.database_url == url
    assert settings.store.shown == "postgresql://kms@db.internal:5432/hsmkms"


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
    assert settings.regions.served == ("eu-west-1",) and settings.token.session_pool_size == 3
    (tmp_path / "hsmkms.toml").write_text('account_id = "abc"\n')
    # A mistake in the file is reported under the file and its key, not the variable.
    with pytest.raises(ValueError, match=r"^hsmkms.toml: account_id: "):
        load_settings({})


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"HSMKMS_TOKEN_LABLE": "x"},
            "HSMKMS_TOKEN_LABLE: not a setting of hsmkms (did you mean HSMKMS_TOKEN_LABEL?)",
        ),
        ({"HSMKMS_CONFIG": "/nope.toml"}, "HSMKMS_CONFIG: no such file: /nope.toml"),
        (
            {"HSMKMS_RATE_LIMITS": "CreateKey=abc"},
            "HSMKMS_RATE_LIMITS: 'CreateKey=abc': the rate must be a number",
        ),
        (
            {"HSMKMS_RATE_LIMITS": "Bogus=5"},
            "HSMKMS_RATE_LIMITS: 'Bogus=5': 'Bogus' is not a KMS operation",
        ),
        (
            {"HSMKMS_PORT": "99999"},
            "HSMKMS_PORT: Input should be less than or equal to 65535 (given: '99999')",
        ),
        (
            {"HSMKMS_WORKERS": "0"},
            "HSMKMS_WORKERS: Input should be greater than or equal to 1 (given: '0')",
        ),
        (
            {"HSMKMS_WORKERS": "-3"},
            "HSMKMS_WORKERS: Input should be greater than or equal to 1 (given: '-3')",
        ),
        (
            {"HSMKMS_AUDIT_DURABILITY": "fast"},
            "HSMKMS_AUDIT_DURABILITY: Input should be 'sync' or 'async' (given: 'fast')",
        ),
    ],
)
def test_each_mistake_is_one_line_naming_the_variable_and_value(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, env: dict[str, str], message: str
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError) as caught:
        load_settings(env)
    assert str(caught.value).startswith(message), str(caught.value)
    assert "\n" not in str(caught.value)


def test_file_mistakes_name_the_file_and_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "site.toml"
    env = {"HSMKMS_CONFIG": str(config)}
    config.write_text('token_label = "prod"\nprot = 8081\n')
    with pytest.raises(
        ValueError, match=rf"^{config}: prot: not a setting of hsmkms \(did you mean port\?\)$"
    ):
        load_settings(env)
    config.write_text("port = \n")
    with pytest.raises(ValueError, match=rf"^{config}: not valid TOML: .*line 1"):
        load_settings(env)
    config.write_text('port = "eighty"\n')
    with pytest.raises(ValueError, match=rf"^{config}: port: Input should be a valid integer"):
        load_settings(env)
    config.write_text('port = 8081\nhost = "0.0.0.0"\nrate_limits = "Encrypt=100:200"\n')
    serving = load_settings(env).serving
    assert (serving.host, serving.port) == ("0.0.0.0", 8081)
    assert load_settings(env).rate_limits.per_operation["Encrypt"].burst == 200


def test_secrets_are_never_echoed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError) as caught:
        load_settings({"HSMKMS_DATABASE_URL": "mysql://kms:hunter2@db/x"})
    assert "hunter2" not in str(caught.value)


def test_the_test_harness_and_serve_variables_are_not_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    load_settings({"HSMKMS_TEST_TOKEN": "nss", "HSMKMS_SERVE_CLIENT_SUBJECTS": "a,b"})


def test_every_setting_has_one_flat_name_and_the_readme_lists_it() -> None:
    from hsmkms.config import flat_names

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    missing = sorted(n for n in flat_names() if f"HSMKMS_{n.upper()}" not in readme)
    assert missing == []
