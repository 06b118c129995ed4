"""Configuration: HSMKMS_* environment variables, overridden by a TOML file.

The file is `$HSMKMS_CONFIG` if set, else `./hsmkms.toml`, else
`$HSMKMS_DATA_DIR/hsmkms.toml`; its keys are the variable names without the
`HSMKMS_` prefix, lower-cased (`token_label = "prod"`).
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

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


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    pkcs11_lib: str
    token_label: str
    pin: str | None = field(default=None, repr=False)
    pin_file: Path | None = None
    database_url: str = ""
    account_id: str = DEFAULT_ACCOUNT_ID
    regions: tuple[str, ...] = ()
    session_pool_size: int = 2
    maintenance_seconds: float = 300.0

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
    def softhsm_conf(self) -> Path:
        return self.data_dir / "softhsm2.conf"

    def read_pin(self) -> str | None:
        """The user PIN: HSMKMS_PIN, else the PIN file (default: the one init wrote)."""
        if self.pin:
            return self.pin
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


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    env = dict(os.environ if env is None else env)
    values: dict[str, str] = {
        name.removeprefix("HSMKMS_").lower(): value
        for name, value in env.items()
        if name.startswith("HSMKMS_")
    }
    toml_path = _find_toml(env)
    if toml_path is not None:
        with toml_path.open("rb") as handle:
            values.update({k.lower(): str(v) for k, v in tomllib.load(handle).items()})

    data_dir = Path(values.get("data_dir", ".hsmkms"))
    module = values.get("pkcs11_lib") or default_pkcs11_lib()
    regions = tuple(r.strip() for r in values.get("regions", "").split(",") if r.strip())
    pin_file = values.get("pin_file")
    database_url = values.get("database_url") or f"sqlite:///{data_dir / 'hsmkms.db'}"
    if not database_url.startswith("sqlite:///"):
        raise ValueError("HSMKMS_DATABASE_URL: only sqlite:/// is supported in this release")
    return Settings(
        data_dir=data_dir,
        pkcs11_lib=module,
        token_label=values.get("token_label", DEFAULT_TOKEN_LABEL),
        pin=values.get("pin") or None,
        pin_file=Path(pin_file) if pin_file else None,
        database_url=database_url,
        account_id=values.get("account_id", DEFAULT_ACCOUNT_ID),
        regions=regions,
        session_pool_size=int(values.get("session_pool_size") or default_pool_size(module)),
        maintenance_seconds=float(values.get("maintenance_seconds", "300")),
    )
