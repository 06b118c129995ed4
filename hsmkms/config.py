"""Configuration: one typed model, read from HSMKMS_* environment variables and a TOML
file that overrides them.

The file is `$HSMKMS_CONFIG` if set, else `./hsmkms.toml`, else
`$HSMKMS_DATA_DIR/hsmkms.toml`; its keys are the variable names without the
`HSMKMS_` prefix, lower-cased (`token_label = "prod"`). A bad value stops the
program with one line naming the setting (`HSMKMS_ACCOUNT_ID: ...`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

SOFTHSM2_CANDIDATES = (
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/local/lib/softhsm/libsofthsm2.so",
)
DEFAULT_ACCOUNT_ID = "111122223333"
DEFAULT_REGION = "us-east-1"
DEFAULT_TOKEN_LABEL = "hsmkms"
PIN_FILE_NAME = "user.pin"
ENV_PREFIX = "HSMKMS_"
_REGION_SHAPE = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d{1,2}$")


def default_pkcs11_lib() -> str:
    for candidate in SOFTHSM2_CANDIDATES:
        if Path(candidate).exists():
            return candidate
    return SOFTHSM2_CANDIDATES[0]


def is_softhsm(module_path: str) -> bool:
    return "softhsm" in Path(module_path).name.lower()


def default_pool_size(module_path: str) -> int:
    """SoftHSM2 serialises calls internally (measured: two threads do half the work
    of one), so a few sessions serve it best; HSMs run sessions in parallel."""
    return 2 if is_softhsm(module_path) else 8


@cache
def known_regions() -> frozenset[str]:
    """Every region botocore knows, in every partition (aws, aws-cn, aws-us-gov, ...)."""
    from botocore.loaders import create_loader

    endpoints = create_loader().load_data("endpoints")
    return frozenset(
        region for partition in endpoints["partitions"] for region in partition["regions"]
    )


# The environment a load_settings() call reads (tests pass their own mapping).
_environment: ContextVar[Mapping[str, str] | None] = ContextVar("hsmkms_env", default=None)
_toml_file: ContextVar[Path | None] = ContextVar("hsmkms_toml", default=None)


class _Environment(EnvSettingsSource):
    def _load_env_vars(self) -> Mapping[str, str | None]:
        env = _environment.get()
        if env is None:
            return super()._load_env_vars()
        return {k.lower(): v for k, v in env.items() if k.upper().startswith(ENV_PREFIX)}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, frozen=True, extra="ignore", case_sensitive=False
    )

    data_dir: Path = Path(".hsmkms")
    pkcs11_lib: str = Field(default_factory=default_pkcs11_lib)
    token_label: str = DEFAULT_TOKEN_LABEL
    pin: SecretStr | None = None
    pin_file: Path | None = None
    so_pin_file: Path | None = None
    database_url: str = ""
    account_id: str = DEFAULT_ACCOUNT_ID
    regions: Annotated[tuple[str, ...], NoDecode] = ()
    session_pool_size: int = Field(default=0, ge=0, le=1024)  # 0: the module's default
    database_pool_size: int = Field(default=8, ge=1, le=1024)
    maintenance_seconds: float = Field(default=300.0, ge=0)
    # The XKS proxy API: its key stores' URI prefixes (comma-separated; "/" for none).
    xks_uri_prefix: Annotated[tuple[str, ...], NoDecode] = ("xks",)
    xks_regions: Annotated[tuple[str, ...], NoDecode] = ()  # SigV4 regions accepted (any)
    xks_fleet_size: int = Field(default=1, ge=1, le=1000)  # proxies behind the endpoint
    xks_max_pending: int = Field(default=512, ge=1)  # beyond: ThrottlingException
    xks_health_cache_seconds: float = Field(default=1.0, ge=0, le=60)
    # The module's C_Initialize string (NSS softokn: configdir=...); empty: none.
    pkcs11_init_args: SecretStr | None = None
    # The audit trail (hsmkms/audit/): a record is on disk before the response (sync)
    # or written just after it (async); per-process chains named by node.
    audit_durability: Literal["sync", "async"] = "sync"
    audit_node_id: str | None = None
    audit_rotate_bytes: int = Field(default=64 * 1024 * 1024, ge=4096)
    audit_rotate_seconds: float = Field(default=86400.0, gt=0)
    audit_checkpoint_records: int = Field(default=1000, ge=1)
    audit_checkpoint_seconds: float = Field(default=60.0, gt=0)
    # Deployments sharing one token name their trails apart (hsmkms.audit.trails).
    audit_scope: str = Field(default="default", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    # Serving: deadlines, shutdown, quotas, processes.
    token_call_timeout_seconds: float = Field(default=30.0, ge=0)  # 0: no deadline
    shutdown_drain_seconds: float = Field(default=10.0, ge=0)
    rate_limit: float = Field(default=0.0, ge=0)  # requests/s per principal; 0: off
    rate_burst: float = Field(default=0.0, ge=0)  # bucket size; 0: the rate
    rate_limits: str = ""  # per-operation quotas: "Encrypt=100[:200],..."
    workers: int = Field(default=1, ge=1, le=64)  # `hsmkms serve` processes on one port
    # The HTTP edge (api/server.py's EdgeLimits).
    max_request_bytes: int = Field(default=300 * 1024, ge=1024, le=64 * 1024 * 1024)
    max_header_count: int = Field(default=100, ge=8, le=10_000)
    max_header_bytes: int = Field(default=16 * 1024, ge=1024, le=1024 * 1024)
    header_timeout_seconds: float = Field(default=10.0, gt=0)
    body_timeout_seconds: float = Field(default=20.0, gt=0)
    max_connections: int = Field(default=512, ge=1)
    keep_alive_seconds: int = Field(default=5, ge=1)
    # The security domain (hsmkms/token/domain.py): with a domain, new material is
    # wrappable under the domain key only; true keeps it never-extractable (for HSMs
    # whose own cloning is preferred). The SO PIN file is read by `hsmkms domain`.
    keep_never_extractable: bool = False

    # Multi-Region keys: regions whose keys live on a token of their own, as separate
    # HSMs per region would ("eu-west-1=label2,ap-south-1=label3"; same PKCS#11 module).
    # Each token's user PIN is the main one, or <region_pin_dir>/<label>.pin when set.
    # Regions not listed use token_label.
    region_tokens: Annotated[dict[str, str], NoDecode] = Field(default_factory=dict)
    region_pin_dir: Path | None = None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Earlier sources win: the TOML file overrides the environment.
        sources: list[PydanticBaseSettingsSource] = [init_settings]
        toml = _toml_file.get()
        if toml is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml))
        sources.append(_Environment(settings_cls))
        return tuple(sources)

    @field_validator("account_id")
    @classmethod
    def _account(cls, value: str) -> str:
        if not re.fullmatch(r"\d{12}", value):
            raise ValueError(f"an AWS account id is 12 digits, not {value!r}")
        return value

    @field_validator("regions", mode="before")
    @classmethod
    def _split_regions(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(r.strip() for r in value.split(",") if r.strip())
        return value

    @field_validator("regions")
    @classmethod
    def _known_regions(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for region in value:
            if not _REGION_SHAPE.match(region) or region not in known_regions():
                raise ValueError(f"unknown region {region!r}")
        return value

    @field_validator("pkcs11_lib")
    @classmethod
    def _module_exists(cls, value: str) -> str:
        if value not in SOFTHSM2_CANDIDATES and not Path(value).is_file():
            raise ValueError(f"no PKCS#11 module at {value!r}")
        return value

    @field_validator("database_url")
    @classmethod
    def _database(cls, value: str) -> str:
        if value and not value.startswith(("sqlite:///", "postgresql://", "postgres://")):
            scheme = value.partition(":")[0]  # never echo the URL: it may hold a password
            raise ValueError(
                f"unsupported scheme {scheme!r}: use sqlite:///path or "
                "postgresql://user@host:port/db"
            )
        return value

    @field_validator("xks_uri_prefix", mode="before")
    @classmethod
    def _prefixes(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = value.split(",")
        from hsmkms.errors import ValidationException
        from hsmkms.policy.xks_credentials import normalize_prefix

        try:
            return tuple(normalize_prefix(p) for p in value)
        except ValidationException as exc:
            raise ValueError(exc.message) from None

    @field_validator("xks_regions", mode="before")
    @classmethod
    def _split_xks_regions(cls, value: Any) -> Any:
        return cls._split_regions(value)

    @field_validator("xks_regions")
    @classmethod
    def _known_xks_regions(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return cls._known_regions(value)

    @field_validator("region_tokens", mode="before")
    @classmethod
    def _split_region_tokens(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        pairs = {}
        for item in (i.strip() for i in value.split(",")):
            if item:
                region, equals, label = (p.strip() for p in item.partition("="))
                if not equals or not label:
                    raise ValueError(f"expected region=token-label, not {item!r}")
                pairs[region] = label
        return pairs

    @field_validator("region_tokens")
    @classmethod
    def _known_token_regions(cls, value: dict[str, str]) -> dict[str, str]:
        cls._known_regions(tuple(value))
        return value

    def read_region_pin(self, label: str) -> str | None:
        """The user PIN of a region's token (see region_tokens)."""
        if self.region_pin_dir is None:
            return self.read_pin()
        path = self.region_pin_dir / f"{label}.pin"
        return path.read_text().strip() if path.exists() else None

    @model_validator(mode="after")
    def _derived_defaults(self) -> Settings:
        if not self.database_url:
            object.__setattr__(self, "database_url", f"sqlite:///{self.data_dir / 'hsmkms.db'}")
        if not self.session_pool_size:
            object.__setattr__(self, "session_pool_size", default_pool_size(self.pkcs11_lib))
        return self

    @property
    def region(self) -> str:
        """The region the library and CLI act in: the first one served."""
        return self.regions[0] if self.regions else DEFAULT_REGION

    @property
    def database_path(self) -> Path:
        if self.database_url.startswith("sqlite:///"):
            return Path(self.database_url.removeprefix("sqlite:///"))
        return self.data_dir / "hsmkms.db"

    @property
    def database_shown(self) -> str:
        """The database URL without a password, for reports."""
        if not self.database_url.startswith(("postgresql://", "postgres://")):
            return str(self.database_path)
        scheme, _, rest = self.database_url.partition("://")
        credentials, at, location = rest.rpartition("@")
        user = credentials.partition(":")[0]
        return f"{scheme}://{user}{at}{location}"

    @property
    def softhsm_conf(self) -> Path:
        return self.data_dir / "softhsm2.conf"

    @property
    def init_params(self) -> str | None:
        value = self.pkcs11_init_args.get_secret_value() if self.pkcs11_init_args else ""
        return value or None

    def read_pin(self) -> str | None:
        """The user PIN: HSMKMS_PIN, else the PIN file (default: the one init wrote)."""
        if self.pin is not None and self.pin.get_secret_value():
            return self.pin.get_secret_value()
        path = self.pin_file or self.data_dir / PIN_FILE_NAME
        if path.exists():
            return path.read_text().strip()
        return None


def _find_toml(env: Mapping[str, str]) -> Path | None:
    explicit = env.get("HSMKMS_CONFIG")
    if explicit:
        return Path(explicit)
    for candidate in (
        Path("hsmkms.toml"),
        Path(env.get("HSMKMS_DATA_DIR", ".hsmkms")) / "hsmkms.toml",
    ):
        if candidate.exists():
            return candidate
    return None


@contextmanager
def _sources(env: Mapping[str, str] | None) -> Iterator[None]:
    env_token = _environment.set(env)
    toml_token = _toml_file.set(_find_toml(os.environ if env is None else env))
    try:
        yield
    finally:
        _toml_file.reset(toml_token)
        _environment.reset(env_token)


def _one_line(error: ValidationError) -> str:
    first = error.errors()[0]
    name = ENV_PREFIX + str(first["loc"][0]).upper() if first["loc"] else "configuration"
    message = str(first["msg"]).removeprefix("Value error, ")
    return f"{name}: {message}"


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """The configuration from `env` (default: the process environment) and the TOML file.
    A bad value raises ValueError with one line naming the setting."""
    with _sources(env):
        try:
            return Settings()
        except ValidationError as exc:
            raise ValueError(_one_line(exc)) from None
