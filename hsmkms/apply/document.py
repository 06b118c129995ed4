"""The file `hsmkms apply` reads (TOML or YAML): principals, keys and the XKS proxy's key
stores as they should be. Checked whole before anything is read from the deployment;
a mistake is one line naming the file, the place in it and what is wrong.

Policy documents are given inline (a table / mapping) or as a path to a JSON file;
paths (policies, secret files) are relative to the file's directory.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from hsmkms.config import ConfigError

PolicySource = dict[str, Any] | str  # a document, or a path to one


class _Part(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AccessKeySpec(_Part):
    """An access key with a chosen id: its secret from a file (never in the file itself)."""

    access_key_id: str
    secret_file: str


class PrincipalSpec(_Part):
    arn: str
    access_keys: list[AccessKeySpec] = []
    # One generated key pair (printed once) when the principal has no access key at all.
    generate_access_key: bool = False
    # name -> document: exactly these identity policies (absent: left as they are)
    policies: dict[str, PolicySource] | None = None
    tags: dict[str, str] | None = None  # exactly these tags (absent: left as they are)


class RotationSpec(_Part):
    enabled: bool = True
    period_days: int | None = Field(default=None, ge=90, le=2560)


class GrantSpec(_Part):
    """A grant, known by its name on its key."""

    name: str = Field(min_length=1)
    grantee: str
    operations: list[str] = Field(min_length=1)
    retiring_principal: str | None = None
    constraints: dict[str, dict[str, str]] | None = None


class KeySpec(_Part):
    """A KMS key, found by its aliases: each must name this key (or nothing yet)."""

    aliases: list[str] = Field(min_length=1)
    key_id: str | None = None
    description: str | None = None
    key_spec: str = "SYMMETRIC_DEFAULT"
    key_usage: str = "ENCRYPT_DECRYPT"
    enabled: bool | None = None
    tags: dict[str, str] | None = None  # exactly these tags (absent: left as they are)
    rotation: RotationSpec | None = None
    policy: PolicySource | None = None
    grants: list[GrantSpec] = []  # these grants exist (others are left alone)
    xks_usage: Literal["ENCRYPT_DECRYPT", "ENCRYPT", "DECRYPT", "NONE"] | None = None

    @field_validator("key_id")
    @classmethod
    def _no_chosen_ids(cls, value: str | None) -> str | None:
        if value is not None:
            raise ValueError(
                "keys are found by their aliases: operator-chosen key ids are for the "
                "development mode of a test stack, not for apply"
            )
        return value

    @field_validator("aliases")
    @classmethod
    def _aliases(cls, value: list[str]) -> list[str]:
        for alias in value:
            if not alias.startswith("alias/") or alias.startswith("alias/aws/"):
                raise ValueError(f"{alias!r}: an alias name is alias/NAME (not alias/aws/...)")
        return value


class XksCredentialSpec(_Part):
    access_key_id: str
    secret_file: str
    uri_prefix: str | None = None  # default: the first of HSMKMS_XKS_URI_PREFIX


class XksSpec(_Part):
    credentials: list[XksCredentialSpec] = []
    policies: dict[str, PolicySource] = {}  # URI prefix -> secondary-authorization policy


class Document(_Part):
    principals: list[PrincipalSpec] = []
    keys: list[KeySpec] = []
    xks: XksSpec = XksSpec()


def _place(location: tuple[int | str, ...]) -> str:
    text = ""
    for part in location:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _parse(path: Path) -> Any:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read: {exc.strerror}") from None
    if path.suffix == ".toml":
        try:
            return tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    if path.suffix in (".yaml", ".yml"):
        import yaml

        try:
            return yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            where = getattr(exc, "problem_mark", None)
            at = f" (line {where.line + 1}, column {where.column + 1})" if where else ""
            problem = getattr(exc, "problem", None) or exc
            raise ConfigError(f"{path}: not valid YAML{at}: {problem}") from None
    raise ConfigError(f"{path}: name it .toml, .yaml or .yml, for its format")


def load(path: Path) -> Document:
    data = _parse(path)
    try:
        document = Document.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        place = _place(tuple(first["loc"]))
        message = str(first["msg"]).removeprefix("Value error, ")
        raise ConfigError(
            f"{path}: {place}: {message}" if place else f"{path}: {message}"
        ) from None
    aliases = [alias for key in document.keys for alias in key.aliases]
    repeated = sorted({alias for alias in aliases if aliases.count(alias) > 1})
    if repeated:
        raise ConfigError(f"{path}: keys: {repeated[0]} is given to more than one key")
    return document


def policy_text(source: PolicySource, base: Path, place: str) -> str:
    """A policy document as JSON text: inline, or read from a file next to the file."""
    if isinstance(source, dict):
        return json.dumps(source)
    file = base / source
    try:
        text = file.read_text()
        json.loads(text)
    except OSError as exc:
        raise ConfigError(f"{place}: {file}: cannot be read: {exc.strerror}") from None
    except ValueError as exc:
        raise ConfigError(f"{place}: {file}: not JSON: {exc}") from None
    return text


def secret(base: Path, name: str, place: str) -> str:
    """A secret from a file next to the document (its first line)."""
    file = base / name
    try:
        value = file.read_text().strip()
    except OSError as exc:
        raise ConfigError(f"{place}: {file}: cannot be read: {exc.strerror}") from None
    if not value:
        raise ConfigError(f"{place}: {file} is empty")
    return value
