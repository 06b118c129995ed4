"""Wires configuration -> token -> store -> operations, once. Entry points stay thin."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from hsmkms.audit.log import AuditLog
from hsmkms.audit.shelf import DatabaseShelf
from hsmkms.binding import check_or_bind
from hsmkms.config import ConfigError, Settings, is_softhsm, load_settings
from hsmkms.errors import KMSInternalException
from hsmkms.keys.clock import Clock, system_clock
from hsmkms.library import KeyManager
from hsmkms.operations.context import Deployment
from hsmkms.policy.principals import CredentialStore
from hsmkms.store import open_store
from hsmkms.store.base import MetadataStore
from hsmkms.token import Hsm, NotAPkcs11Module, Token, TokenAuditAnchor, custody_for

if TYPE_CHECKING:
    from starlette.types import ASGIApp

SOFTHSM2_SYSTEM_CONF = Path("/etc/softhsm/softhsm2.conf")


def prepare_environment(settings: Settings) -> None:
    """Point SoftHSM2 at the data dir's config (made by `hsmkms init`) unless the
    operator already chose one, and check that its token directory is there (SoftHSM2
    itself only fails C_Initialize). Must run before the module is loaded."""
    if not is_softhsm(settings.token.pkcs11_lib):
        return
    if "SOFTHSM2_CONF" not in os.environ and settings.softhsm_conf.exists():
        os.environ["SOFTHSM2_CONF"] = str(settings.softhsm_conf.resolve())
    _check_token_directory(Path(os.environ.get("SOFTHSM2_CONF", SOFTHSM2_SYSTEM_CONF)), settings)


def _check_token_directory(conf: Path, settings: Settings) -> None:
    """A SoftHSM2 config names its token directory by absolute path: a data dir moved
    or copied elsewhere still points at the old place."""
    try:
        lines = conf.read_text().splitlines()
    except OSError:
        return  # SoftHSM2 reports an unreadable config itself
    for line in lines:
        name, equals, value = (part.strip() for part in line.partition("="))
        if equals and name == "directories.tokendir" and not Path(value).is_dir():
            here = settings.data_dir / "tokens"
            hint = f" (was the data dir moved? its tokens are in {here.resolve()})"
            raise ConfigError(
                f"{conf}: directories.tokendir {value} does not exist"
                + (hint if here.is_dir() and conf == settings.softhsm_conf.resolve() else "")
            )


@contextmanager
def naming_the_module_setting(settings: Settings) -> Iterator[None]:
    """A module that is not a PKCS#11 module, named with the setting that chose it."""
    try:
        yield
    except NotAPkcs11Module as exc:
        raise ConfigError(f"{settings.origin('pkcs11_lib')}: {exc}") from None


def open_hsm(settings: Settings) -> Hsm:
    prepare_environment(settings)
    pin = settings.require_pin()
    with naming_the_module_setting(settings):
        hsm = Hsm(
            settings.token.pkcs11_lib,
            settings.token.label,
            pin,
            settings.token.session_pool_size,
            call_timeout=settings.token.call_timeout_seconds or None,
            init_params=settings.token.init_params,
        )
    # New material: wrappable under the security domain key once there is one.
    if not settings.token.keep_never_extractable:
        hsm.custody = custody_for(hsm)
    return hsm


def open_deployment(settings: Settings) -> tuple[Hsm, MetadataStore]:
    """The data dir's token and database, once they are known to belong together
    (binding.py). Every entry point that works with both opens them here."""
    hsm = open_hsm(settings)
    try:
        store = open_store(settings.store.database_url, pool_size=settings.store.pool_size)
    except BaseException:
        hsm.close()
        raise
    try:
        check_or_bind(store, hsm)
    except BaseException:
        store.close()
        hsm.close()
        raise
    return hsm, store


def open_region_tokens(settings: Settings, main: Hsm) -> dict[str, Hsm]:
    """The tokens of regions listed in HSMKMS_REGION_TOKENS (one Hsm per label). With
    such a map, new material gets the security domain's custody where a token is in
    a domain, so multi-Region replicas can reach another token wrapped."""
    if not settings.regions.tokens:
        return {}
    if settings.regions.tokens.get(settings.region, settings.token.label) != settings.token.label:
        raise KMSInternalException(
            f"HSMKMS_REGION_TOKENS: {settings.region} is the main region; its token is "
            f"HSMKMS_TOKEN_LABEL ({settings.token.label})"
        )
    by_label = {settings.token.label: main}
    for label in settings.regions.tokens.values():
        if label in by_label:
            continue
        pin = settings.read_region_pin(label)
        by_label[label] = Hsm(
            settings.token.pkcs11_lib, label, pin, settings.token.session_pool_size,
            init_params=settings.token.init_params,
        )  # fmt: skip
    for token in by_label.values():
        token.custody = custody_for(token)
    return {region: by_label[label] for region, label in settings.regions.tokens.items()}


def audit_anchor(hsm: Token, store: MetadataStore, scope: str) -> TokenAuditAnchor:
    """The token's audit key; the latest checkpoints and the trails' records in the
    token, or in the database where the token holds no data objects; `scope`: which of
    the trails the token knows are this deployment's (HSMKMS_AUDIT_SCOPE)."""
    return TokenAuditAnchor(hsm, DatabaseShelf(store), scope)


def open_audit(settings: Settings, hsm: Token, store: MetadataStore) -> AuditLog:
    """The audit trail, checkpointed with the token's audit key."""
    return AuditLog.configured(
        settings.data_dir / "audit",
        settings.audit,
        audit_anchor(hsm, store, settings.audit.scope),
    )


def build_key_manager(
    settings: Settings,
    clock: Clock = system_clock,
    *,
    audited: bool = True,
    source: str = "hsmkms.library",
) -> KeyManager:
    """The library over the configured token and database. Its actions go to the audit
    trail with the operator's identity (`source`: hsmkms.library or hsmkms.cli)."""
    hsm, store = open_deployment(settings)
    deployment = Deployment(
        store,
        hsm,
        account_id=settings.account_id,
        clock=clock,
        region_tokens=open_region_tokens(settings, hsm),
        served_regions=frozenset(settings.regions.served),
    )
    audit = open_audit(settings, hsm, store) if audited else None
    return KeyManager(deployment, settings.region, audit=audit, audit_source=source)


# Seconds past the shutdown drain for closing sessions and the module, then exit.
EXIT_MARGIN = 5.0


def build_app(settings: Settings, km: KeyManager, *, serving: bool = False) -> ASGIApp:
    """The HTTP app over a KeyManager: SigV4 against the stored principals, deadlines,
    quotas, the XKS proxy. `serving`: a real `hsmkms serve` process, which must end
    within the drain time after SIGTERM (never set in tests: it ends the process)."""
    # Imported here: every CLI command opens a deployment, only `serve` builds the app.
    from hsmkms.api.app import create_app
    from hsmkms.api.ratelimit import RateLimiter
    from hsmkms.api.sigv4 import SigV4Verifier
    from hsmkms.console import build_console

    credentials = CredentialStore(km.store, km.hsm, km.clock)
    verifier = SigV4Verifier(
        credentials.lookup, regions=settings.regions.served, on_verified=credentials.record_use
    )
    audit = open_audit(settings, km.hsm, km.store)
    rate_limiter = RateLimiter.configured(settings.rate_limits)
    console = None
    if settings.console.enabled:  # the same principals, quotas and trail as the API
        console = build_console(
            km.context, credentials, audit, audit_anchor(km.hsm, km.store, settings.audit.scope),
            settings.console, region=settings.region, regions=settings.regions.served,
            rate_limiter=rate_limiter,
        )  # fmt: skip
    return create_app(
        km.context,
        verifier,
        maintenance_seconds=settings.serving.maintenance_seconds,
        audit=audit,
        max_request_bytes=settings.edge.max_request_bytes,
        xks=settings.xks,
        call_timeout=settings.token.call_timeout_seconds or None,
        rate_limiter=rate_limiter,
        exit_deadline=settings.serving.shutdown_drain_seconds + EXIT_MARGIN if serving else None,
        access_log=settings.serving.access_log,
        dev_mode=settings.serving.dev_mode,
        console=console,
    )


def app_factory() -> ASGIApp:
    """Each `hsmkms serve --workers N` process builds its app here (uvicorn's
    `hsmkms.bootstrap:app_factory`, factory=True): its own sessions and connections,
    its own audit chain."""
    from hsmkms.api.server import follow_supervisor

    os.umask(0o077)  # files this process makes (database, audit) are the owner's only
    follow_supervisor()  # a worker does not outlive the process that started it
    settings = load_settings()
    return build_app(settings, build_key_manager(settings, audited=False), serving=True)
