"""Configuration: typed settings in groups, read from `HSMKMS_*` environment variables
and a TOML file that overrides them.

The file is `$HSMKMS_CONFIG` if set (it must exist), else `./hsmkms.toml`, else
`$HSMKMS_DATA_DIR/hsmkms.toml`; its keys are the variable names without the `HSMKMS_`
prefix, lower-cased (`token_label = "prod"`). A bad value, an unknown name or an
unreadable file stops the program with one line naming where it was written
(`HSMKMS_ACCOUNT_ID: ...`, `/etc/hsmkms.toml: port: ...`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from pydantic import Field, PrivateAttr, ValidationError, field_validator, model_validator

from hsmkms.config.defaults import (
    DEFAULT_ACCOUNT_ID,
    DEFAULT_REGION,
    DEFAULT_TOKEN_LABEL,
    PIN_FILE_NAME,
    default_pkcs11_lib,
    is_softhsm,
    known_regions,
)
from hsmkms.config.groups import (
    AuditSettings,
    ConsoleSettings,
    EdgeLimits,
    Group,
    Quota,
    RateLimits,
    RegionSettings,
    ServingSettings,
    StoreSettings,
    TokenSettings,
    XksSettings,
    is_known_region,
    uri_prefix,
)
from hsmkms.config.sources import ENV_PREFIX, ConfigError, Value, gather

__all__ = [
    "DEFAULT_ACCOUNT_ID",
    "DEFAULT_REGION",
    "DEFAULT_TOKEN_LABEL",
    "PIN_FILE_NAME",
    "AuditSettings",
    "ConfigError",
    "ConsoleSettings",
    "EdgeLimits",
    "Quota",
    "RateLimits",
    "RegionSettings",
    "ServingSettings",
    "Settings",
    "StoreSettings",
    "TokenSettings",
    "XksSettings",
    "default_pkcs11_lib",
    "flat_names",
    "is_known_region",
    "is_softhsm",
    "known_regions",
    "load_settings",
    "override",
    "uri_prefix",
]


class Settings(Group):
    data_dir: Path = Field(default=Path(".hsmkms"), alias="data_dir")
    account_id: str = Field(default=DEFAULT_ACCOUNT_ID, alias="account_id")
    token: TokenSettings = TokenSettings()
    store: StoreSettings = StoreSettings()
    audit: AuditSettings = AuditSettings()
    edge: EdgeLimits = EdgeLimits()
    serving: ServingSettings = ServingSettings()
    xks: XksSettings = XksSettings()
    rate_limits: RateLimits = RateLimits()
    regions: RegionSettings = RegionSettings()
    console: ConsoleSettings = ConsoleSettings()
    # flat name -> where it was given ("HSMKMS_PIN_FILE", "/etc/hsmkms.toml: pin_file")
    _origins: dict[str, str] = PrivateAttr(default_factory=dict)

    @field_validator("account_id")
    @classmethod
    def _account(cls, value: str) -> str:
        if not value.isascii() or not value.isdigit() or len(value) != 12:
            raise ValueError(f"an AWS account id is 12 digits, not {value!r}")
        return value

    @model_validator(mode="after")
    def _derived(self) -> Settings:
        if not self.store.database_url:
            url = f"sqlite:///{self.data_dir / 'hsmkms.db'}"
            object.__setattr__(self, "store", self.store.model_copy(update={"database_url": url}))
        return self

    @property
    def region(self) -> str:
        """The region the library and CLI act in: the first one served."""
        return self.regions.served[0] if self.regions.served else DEFAULT_REGION

    @property
    def database_path(self) -> Path:
        if self.store.database_url.startswith("sqlite:///"):
            return Path(self.store.database_url.removeprefix("sqlite:///"))
        return self.data_dir / "hsmkms.db"

    @property
    def softhsm_conf(self) -> Path:
        return self.data_dir / "softhsm2.conf"

    def origin(self, name: str) -> str:
        """Where the setting `name` (its flat name, e.g. `pin_file`) was given: the
        variable, or the TOML file and key; the variable's name when it was not given."""
        return self._origins.get(name, ENV_PREFIX + name.upper())

    def read_pin(self) -> str | None:
        """The user PIN, or None where none is configured and init wrote none; a PIN file
        that was named but is missing is a ConfigError naming where it was named."""
        pin_file, given = self.token.pin_file, self.token.pin
        if not (given and given.get_secret_value()) and pin_file and not pin_file.exists():
            raise ConfigError(f"{self.origin('pin_file')}: no such file: {pin_file}")
        return self.token.read_pin(self.data_dir)

    def require_pin(self) -> str:
        """The user PIN; a ConfigError saying where it was looked for when there is none."""
        pin = self.read_pin()
        if pin is None:
            raise ConfigError(
                f"no user PIN: {self.data_dir / PIN_FILE_NAME} does not exist (run `hsmkms "
                "init`, or set HSMKMS_PIN or HSMKMS_PIN_FILE)"
            )
        return pin

    def read_region_pin(self, label: str) -> str:
        """The user PIN of a region's token (see RegionSettings)."""
        if self.regions.pin_dir is None:
            return self.require_pin()
        path = self.regions.pin_dir / f"{label}.pin"
        if not path.exists():
            raise ConfigError(
                f"{self.origin('region_pin_dir')}: no user PIN for the region token "
                f"{label!r}: {path} does not exist"
            )
        return path.read_text().strip()


def _places() -> dict[str, tuple[str | None, str]]:
    """flat name -> (group field or None for a top-level one, alias in that group)."""
    places: dict[str, tuple[str | None, str]] = {}
    for name, field in Settings.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, Group):
            for inner in annotation.model_fields.values():
                assert inner.alias is not None
                places[inner.alias] = (name, inner.alias)
        else:
            places[field.alias or name] = (None, field.alias or name)
    return places


PLACES = _places()
G = TypeVar("G", bound=Group)
# Values never echoed in an error: they may hold a secret.
SECRET_NAMES = frozenset({"pin", "pkcs11_init_args", "database_url"})


def flat_names() -> frozenset[str]:
    """Every setting's flat name (`audit_durability`): HSMKMS_<NAME>, or the TOML key."""
    return frozenset(PLACES)


def _nested(values: Mapping[str, Value]) -> dict[str, Any]:
    nested: dict[str, Any] = {}
    for name, given in values.items():
        group, alias = PLACES[name]
        if group is None:
            nested[alias] = given.value
        else:
            nested.setdefault(group, {})[alias] = given.value
    return nested


def _one_line(error: ValidationError, values: Mapping[str, Value]) -> str:
    first = error.errors()[0]
    loc = [str(part) for part in first["loc"]]
    name = next((part for part in reversed(loc) if part in PLACES), None)
    message = str(first["msg"]).removeprefix("Value error, ")
    if name is None:  # a rule across settings: its message names them
        return message
    given = values.get(name)
    origin = given.origin if given is not None else ENV_PREFIX + name.upper()
    shown = ""
    if given is not None and name not in SECRET_NAMES and str(given.value) not in message:
        shown = f" (given: {given.value!r})"
    return f"{origin}: {message}{shown}"


def override(group: G, values: Mapping[str, Any], flag: Callable[[str], str]) -> G:
    """`group` with `values` (by field name) over its own, e.g. command-line flags; a
    bad one raises ConfigError naming it as `flag(field name)` says."""
    try:
        return group.model_validate({**group.model_dump(), **values})
    except ValidationError as exc:
        first = exc.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else ""
        message = str(first["msg"]).removeprefix("Value error, ")
        shown = f" (given: {values[field]!r})" if field in values else ""
        raise ConfigError(f"{flag(field)}: {message}{shown}") from None


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """The configuration from `env` (default: the process environment) and the TOML file.
    A mistake raises ConfigError (a ValueError) with one line naming where it is."""
    values = gather(env, flat_names())
    try:
        settings = Settings.model_validate(_nested(values))
    except ValidationError as exc:
        raise ConfigError(_one_line(exc, values)) from None
    settings._origins = {name: given.origin for name, given in values.items()}
    return settings
