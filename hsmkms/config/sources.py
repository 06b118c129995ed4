"""Where settings come from: `HSMKMS_*` environment variables and a TOML file over them.

Each value keeps its origin (the variable, or the file and key), so a bad value, an
unknown name, a missing or unreadable file is one line naming where it was written.
"""

from __future__ import annotations

import difflib
import os
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ENV_PREFIX = "HSMKMS_"
CONFIG_VARIABLE = "HSMKMS_CONFIG"
# HSMKMS_* names that are not settings: the file, what `serve` hands its worker
# processes, and the test suite's own switches.
NOT_SETTINGS = frozenset(
    {CONFIG_VARIABLE, "HSMKMS_SERVE_CLIENT_SUBJECTS", "HSMKMS_SERVE_SHARED_DIR"}
)
NOT_SETTINGS_PREFIXES = ("HSMKMS_TEST_",)
TOML_NAME = "hsmkms.toml"


class ConfigError(ValueError):
    """A configuration mistake, in one line naming where it was made."""


@dataclass(frozen=True)
class Value:
    value: Any
    origin: str  # "HSMKMS_PORT" or "/etc/hsmkms.toml: port"


def _unknown(name: str, known: Iterable[str], shown: str, prefix: str = "") -> ConfigError:
    """`name` and `known` without `prefix`; the hint puts it back."""
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.7)
    hint = f" (did you mean {prefix}{close[0]}?)" if close else ""
    return ConfigError(f"{shown}: not a setting of hsmkms{hint}")


def from_environment(env: Mapping[str, str], names: frozenset[str]) -> dict[str, Value]:
    """`names`: the settings' flat names, lower-case."""
    values: dict[str, Value] = {}
    known = [n.upper() for n in names]
    for variable, text in env.items():
        upper = variable.upper()
        if not upper.startswith(ENV_PREFIX) or upper in NOT_SETTINGS:
            continue
        if upper.startswith(NOT_SETTINGS_PREFIXES):
            continue
        name = upper.removeprefix(ENV_PREFIX).lower()
        if name not in names:
            raise _unknown(upper.removeprefix(ENV_PREFIX), known, upper, ENV_PREFIX)
        values[name] = Value(text, upper)
    return values


def find_toml(env: Mapping[str, str]) -> Path | None:
    """`$HSMKMS_CONFIG` (which must exist), else ./hsmkms.toml, else the data dir's."""
    explicit = env.get(CONFIG_VARIABLE)
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise ConfigError(f"{CONFIG_VARIABLE}: no such file: {explicit}")
        return path
    data_dir = Path(env.get(ENV_PREFIX + "DATA_DIR", ".hsmkms"))
    for candidate in (Path(TOML_NAME), data_dir / TOML_NAME):
        if candidate.is_file():
            return candidate
    return None


def from_toml(path: Path, names: frozenset[str]) -> dict[str, Value]:
    try:
        document = tomllib.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    values: dict[str, Value] = {}
    for key, value in document.items():
        name = key.lower()
        if name not in names:
            raise _unknown(name, names, f"{path}: {key}")
        values[name] = Value(value, f"{path}: {key}")
    return values


def gather(env: Mapping[str, str] | None, names: frozenset[str]) -> dict[str, Value]:
    """Every configured value by flat name: the TOML file's over the environment's."""
    environment = os.environ if env is None else env
    values = from_environment(environment, names)
    toml = find_toml(environment)
    if toml is not None:
        values.update(from_toml(toml, names))
    return values
