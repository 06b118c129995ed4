"""The settings in the groups the parts of hsmkms take whole: the token, the store, the
audit trail, the HTTP edge, serving, the XKS proxy, rate limits and regions.

Every field's alias is its flat name: `HSMKMS_<ALIAS>` in the environment, `<alias>` in
the TOML file (`audit_durability`, not `[audit] durability`), so the names operators
know stay as they were when the settings were one flat list.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from hsmkms.config.defaults import (
    DEFAULT_TOKEN_LABEL,
    MAX_WORKERS,
    PIN_FILE_NAME,
    SOFTHSM2_CANDIDATES,
    available_cores,
    default_pkcs11_lib,
    default_pool_size,
    kms_operation_names,
    known_regions,
)

_REGION_SHAPE = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d{1,2}\Z")
_URI_PREFIX = re.compile(r"^[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*\Z|^\Z")
# XksProxyUriPath is at most 128 characters of [A-Za-z0-9/_-], ending in /kms/xks/v1.
MAX_URI_PREFIX = 128 - len("/kms/xks/v1") - 1


class Group(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


def _split(value: Any) -> Any:
    """A comma-separated string (from the environment) as a tuple."""
    if isinstance(value, str):
        return tuple(item.strip() for item in value.split(",") if item.strip())
    return value


def is_known_region(region: str) -> bool:
    """A region name botocore knows (the one check for configured and signed regions)."""
    return _REGION_SHAPE.fullmatch(region) is not None and region in known_regions()


def check_region(region: str) -> str:
    if not is_known_region(region):
        raise ValueError(f"unknown region {region!r}")
    return region


def uri_prefix(prefix: str) -> str:
    """An XKS URI prefix without surrounding slashes ("" for none), checked."""
    value = prefix.strip().strip("/")
    if len(value) > MAX_URI_PREFIX or not _URI_PREFIX.match(value):
        raise ValueError(
            f"URI prefix {prefix!r}: at most {MAX_URI_PREFIX} characters of A-Z, a-z, 0-9, "
            "'_', '-' and '/'."
        )
    return value


class TokenSettings(Group):
    """The PKCS#11 token holding the keys (hsmkms/token)."""

    pkcs11_lib: str = Field(default_factory=default_pkcs11_lib, alias="pkcs11_lib")
    label: str = Field(
        default=DEFAULT_TOKEN_LABEL, alias="token_label", min_length=1, max_length=32
    )
    pin: SecretStr | None = Field(default=None, alias="pin")
    pin_file: Path | None = Field(default=None, alias="pin_file")
    # The token's SO PIN, read by the security-domain commands only.
    so_pin_file: Path | None = Field(default=None, alias="so_pin_file")
    # The module's C_Initialize string (NSS softokn: configdir=...); empty: none.
    init_args: SecretStr | None = Field(default=None, alias="pkcs11_init_args")
    session_pool_size: int = Field(
        default=0, ge=0, le=1024, alias="session_pool_size"
    )  # 0: default
    call_timeout_seconds: float = Field(default=30.0, ge=0, alias="token_call_timeout_seconds")
    # With a security domain, new material is wrappable under the domain key only; true
    # keeps it never-extractable (for HSMs whose own cloning is preferred).
    keep_never_extractable: bool = Field(default=False, alias="keep_never_extractable")

    @field_validator("pkcs11_lib")
    @classmethod
    def _module_exists(cls, value: str) -> str:
        if value not in SOFTHSM2_CANDIDATES and not Path(value).is_file():
            raise ValueError(f"no PKCS#11 module at {value!r}")
        return value

    @model_validator(mode="after")
    def _pool_default(self) -> TokenSettings:
        if not self.session_pool_size:
            object.__setattr__(self, "session_pool_size", default_pool_size(self.pkcs11_lib))
        return self

    @property
    def init_params(self) -> str | None:
        value = self.init_args.get_secret_value() if self.init_args else ""
        return value or None

    def read_pin(self, data_dir: Path) -> str | None:
        """The user PIN: HSMKMS_PIN, else the PIN file (default: the one init wrote)."""
        if self.pin is not None and self.pin.get_secret_value():
            return self.pin.get_secret_value()
        path = self.pin_file or data_dir / PIN_FILE_NAME
        if path.exists():
            return path.read_text().strip()
        return None


class StoreSettings(Group):
    """The metadata database (hsmkms/store)."""

    database_url: str = Field(default="", alias="database_url")  # empty: SQLite in the data dir
    pool_size: int = Field(default=8, ge=1, le=1024, alias="database_pool_size")

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

    @property
    def shown(self) -> str:
        """The database URL without a password, for reports."""
        if not self.database_url.startswith(("postgresql://", "postgres://")):
            return self.database_url.removeprefix("sqlite:///")
        scheme, _, rest = self.database_url.partition("://")
        credentials, at, location = rest.rpartition("@")
        user = credentials.partition(":")[0]
        return f"{scheme}://{user}{at}{location}"


class AuditSettings(Group):
    """The audit trail (hsmkms/audit): a record is on disk before the response (sync) or
    written just after it (async); per-process chains named by node."""

    durability: Literal["sync", "async"] = Field(default="sync", alias="audit_durability")
    node_id: str | None = Field(default=None, alias="audit_node_id")
    rotate_bytes: int = Field(default=64 * 1024 * 1024, ge=4096, alias="audit_rotate_bytes")
    rotate_seconds: float = Field(default=86400.0, gt=0, alias="audit_rotate_seconds")
    checkpoint_records: int = Field(default=1000, ge=1, alias="audit_checkpoint_records")
    checkpoint_seconds: float = Field(default=60.0, gt=0, alias="audit_checkpoint_seconds")
    # Deployments sharing one token name their trails apart (hsmkms.audit.trails).
    scope: str = Field(default="default", pattern=r"^[A-Za-z0-9_.-]{1,64}$", alias="audit_scope")


class EdgeLimits(Group):
    """What one request or client may take at the HTTP edge, and which proxies it believes
    (hsmkms/api/server.py says where each limit is enforced)."""

    max_request_bytes: int = Field(
        default=300 * 1024, gt=0, le=64 * 1024 * 1024, alias="max_request_bytes"
    )
    max_header_count: int = Field(default=100, gt=0, le=10_000, alias="max_header_count")
    max_header_bytes: int = Field(default=16 * 1024, gt=0, le=1024 * 1024, alias="max_header_bytes")
    # connect (or a later request's first byte) to the end of the headers
    header_timeout_seconds: float = Field(default=10.0, gt=0, alias="header_timeout_seconds")
    body_timeout_seconds: float = Field(
        default=20.0, gt=0, alias="body_timeout_seconds"
    )  # headers to body
    max_connections: int = Field(default=512, gt=0, alias="max_connections")
    # per peer address (an IPv6 /64 counts as one); trusted proxies are exempt
    max_connections_per_client: int = Field(default=128, gt=0, alias="max_connections_per_client")
    keep_alive_seconds: int = Field(default=5, gt=0, alias="keep_alive_seconds")
    # Reverse proxies whose X-Forwarded-For/-Proto are believed (addresses or CIDRs,
    # comma-separated); none: those headers are ignored.
    trusted_proxies: tuple[str, ...] = Field(default=(), alias="trusted_proxies")

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _proxies(cls, value: Any) -> Any:
        proxies = _split(value)
        for proxy in proxies:
            try:
                ipaddress.ip_network(proxy, strict=False)
            except ValueError:
                raise ValueError(f"{proxy!r} is not an IP address or network") from None
        return proxies


class ServingSettings(Group):
    """`hsmkms serve`: where, how many processes, shutdown, upkeep and the access log."""

    host: str = Field(default="127.0.0.1", min_length=1, alias="host")
    port: int = Field(default=8080, ge=1, le=65535, alias="port")
    # Processes on one port; None: one per core this process may use (available_cores).
    workers: int | None = Field(default=None, ge=1, le=MAX_WORKERS, alias="workers")
    shutdown_drain_seconds: float = Field(default=10.0, ge=0, alias="shutdown_drain_seconds")
    maintenance_seconds: float = Field(default=300.0, ge=0, alias="maintenance_seconds")
    # One line per request to stderr (hsmkms/api/observe.py): text, JSON lines, or none.
    access_log: Literal["off", "text", "json"] = Field(default="text", alias="access_log")
    # TLS (PEM files); with a client CA, client certificates are required (mutual TLS),
    # and with subjects, one of these certificate CNs.
    tls_cert: Path | None = Field(default=None, alias="tls_cert")
    tls_key: Path | None = Field(default=None, alias="tls_key")
    tls_client_ca: Path | None = Field(default=None, alias="tls_client_ca")
    tls_client_subjects: tuple[str, ...] = Field(default=(), alias="tls_client_subjects")
    # Development mode: the reset endpoints of moto_server and LocalStack, which wipe every
    # key (hsmkms/api/devmode.py). Off by default; `serve` refuses it over a security
    # domain or a token that is not SoftHSM2, and says so loudly when it starts.
    dev_mode: bool = Field(default=False, alias="dev_mode")

    @field_validator("tls_client_subjects", mode="before")
    @classmethod
    def _subjects(cls, value: Any) -> Any:
        return _split(value)

    @property
    def scheme(self) -> str:
        return "https" if self.tls_cert else "http"

    @property
    def processes(self) -> int:
        """How many server processes `serve` runs: `workers`, else one per core."""
        return self.workers or available_cores()


class ConsoleSettings(Group):
    """The browser console under /console/ (hsmkms/console): on unless switched off; over
    plain HTTP it signs in from loopback only. Sessions end after `idle_seconds` without
    a request (PCI DSS 8.2.8: 15 minutes) and `session_seconds` after sign-in whatever
    happens; `signin_failures` failed sign-ins per source address or access key id are
    allowed at once, then one every `signin_window_seconds / signin_failures`, for the
    whole server (console/signin.py)."""

    enabled: bool = Field(default=True, alias="console")
    idle_seconds: float = Field(default=900.0, gt=0, le=86400, alias="console_idle_seconds")
    session_seconds: float = Field(
        default=8 * 3600.0, gt=0, le=7 * 86400, alias="console_session_seconds"
    )
    signin_failures: int = Field(default=5, ge=1, le=1000, alias="console_signin_failures")
    signin_window_seconds: float = Field(
        default=300.0, gt=0, le=86400, alias="console_signin_window_seconds"
    )


class XksSettings(Group):
    """The XKS proxy API: its key stores' URI prefixes ("/" alone for none), the SigV4
    regions it accepts (empty: any), the proxies behind the endpoint, a bound on work
    in progress (beyond: ThrottlingException), and how long a health answer is reused."""

    uri_prefixes: tuple[str, ...] = Field(default=("xks",), alias="xks_uri_prefix")
    regions: tuple[str, ...] = Field(default=(), alias="xks_regions")
    fleet_size: int = Field(default=1, ge=1, le=1000, alias="xks_fleet_size")
    max_pending: int = Field(default=512, ge=0, alias="xks_max_pending")
    health_cache_seconds: float = Field(default=1.0, ge=0, le=60, alias="xks_health_cache_seconds")

    @field_validator("uri_prefixes", mode="before")
    @classmethod
    def _prefixes(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = value.split(",")
        return tuple(uri_prefix(p) for p in value)

    @field_validator("regions", mode="before")
    @classmethod
    def _regions(cls, value: Any) -> Any:
        return tuple(check_region(r) for r in _split(value))


@dataclass(frozen=True)
class Quota:
    rate: float  # requests per second, refilled continuously
    burst: float  # bucket size: requests allowed at once after a quiet spell

    def __post_init__(self) -> None:
        if not self.rate > 0 or not self.burst >= 1:
            raise ValueError("a quota needs a rate above 0 and a burst of at least 1")


def parse_quotas(value: Any) -> dict[str, Quota]:
    """`CreateKey=5,Encrypt=100:200` (rate[:burst]) or a TOML table -> quotas by name."""
    if isinstance(value, dict):
        items = [f"{name}={rate}" for name, rate in value.items()]
    else:
        items = [part.strip() for part in str(value).split(",") if part.strip()]
    quotas: dict[str, Quota] = {}
    for item in items:
        name, sep, text = (part.strip() for part in item.partition("="))
        rate, _, burst = text.partition(":")
        if not sep or not name:
            raise ValueError(f"{item!r}: expected Operation=rate[:burst]")
        if name not in kms_operation_names():
            raise ValueError(f"{item!r}: {name!r} is not a KMS operation")
        try:
            quotas[name] = Quota(float(rate), float(burst or rate))
        except ValueError:
            raise ValueError(
                f"{item!r}: the rate must be a number above 0 and the burst at least 1"
            ) from None
    return quotas


class RateLimits(Group):
    """Per-principal request quotas (hsmkms/api/ratelimit.py)."""

    rate: float = Field(default=0.0, ge=0, alias="rate_limit")  # requests/s per principal; 0: off
    burst: float = Field(default=0.0, ge=0, alias="rate_burst")  # bucket size; 0: the rate
    per_operation: dict[str, Quota] = Field(default_factory=dict, alias="rate_limits")

    @field_validator("per_operation", mode="before")
    @classmethod
    def _quotas(cls, value: Any) -> Any:
        return parse_quotas(value) if isinstance(value, str | dict) else value


class RegionSettings(Group):
    """The regions served (from the SigV4 scope; empty: any) and, for multi-Region keys,
    regions whose keys live on a token of their own, as separate HSMs per region would
    ("eu-west-1=label2,ap-south-1=label3"; same PKCS#11 module). Each such token's user
    PIN is the main one, or <pin_dir>/<label>.pin when set."""

    served: tuple[str, ...] = Field(default=(), alias="regions")
    tokens: dict[str, str] = Field(default_factory=dict, alias="region_tokens")
    pin_dir: Path | None = Field(default=None, alias="region_pin_dir")

    @field_validator("served", mode="before")
    @classmethod
    def _served(cls, value: Any) -> Any:
        return tuple(check_region(r) for r in _split(value))

    @field_validator("tokens", mode="before")
    @classmethod
    def _tokens(cls, value: Any) -> Any:
        if isinstance(value, str):
            pairs = {}
            for item in _split(value):
                region, equals, label = (p.strip() for p in item.partition("="))
                if not equals or not label:
                    raise ValueError(f"expected region=token-label, not {item!r}")
                pairs[region] = label
            value = pairs
        if isinstance(value, dict):
            for region in value:
                check_region(region)
        return value
