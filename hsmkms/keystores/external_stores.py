"""External key stores (CustomKeyStoreType EXTERNAL_KEY_STORE): the store half of
CreateCustomKeyStore, ConnectCustomKeyStore, UpdateCustomKeyStore and
DescribeCustomKeyStores.

A store names an XKS proxy (UriEndpoint + UriPath) and the SigV4 credential hsmkms
signs with; the credential's secret is kept wrapped by the main token. Only
PUBLIC_ENDPOINT connectivity exists here (no VPC endpoint services). Errors follow
the "KMS Considerations" table of the XKS Proxy API specification
(hsmkms/keystores/external_failures.py).
"""

from __future__ import annotations

import base64
import re
import uuid
from dataclasses import replace
from typing import Any

from hsmkms.errors import (
    CustomKeyStoreInvalidStateException,
    KMSInvalidStateException,
    LimitExceededException,
    UnsupportedOperationException,
    ValidationException,
    XksProxyUriInUseException,
)
from hsmkms.keystores import external_client
from hsmkms.keystores.context import KeyStoreContext, Response
from hsmkms.keystores.external_client import ProxyTarget, XksClient, XksProxyFailure
from hsmkms.keystores.external_failures import connection_error_code, management_error
from hsmkms.keystores.records import (
    EXTERNAL,
    CustomKeyStore,
    check_name_free,
    get_store,
    put_store,
    regional_stores,
)
from hsmkms.policy.caller import current_caller
from hsmkms.policy.wrapping import unwrap_secret, wrap_secret

PUBLIC_ENDPOINT = "PUBLIC_ENDPOINT"
MAX_STORES = 10
# AWS's member patterns (the service model's XksProxy* shapes).
URI_ENDPOINT = re.compile(r"^https://[a-zA-Z0-9.-]+\Z")
URI_PATH = re.compile(r"^(/[a-zA-Z0-9/_-]+/kms/xks/v\d{1,2})\Z|^(/kms/xks/v\d{1,2})\Z")
ACCESS_KEY_ID = re.compile(r"^[A-Z2-7]{20,30}\Z")
SECRET = re.compile(r"^[a-zA-Z0-9/+=]{43,64}\Z")


# -- the store's proxy settings -------------------------------------------------------


def _secret_aad(store_id: str, access_key_id: str) -> bytes:
    return f"hsmkms-xks-proxy-credential\0{store_id}\0{access_key_id}".encode()


def request_metadata(
    ctx: KeyStoreContext, operation: str, key_arn: str | None = None
) -> dict[str, str]:
    """requestMetadata as AWS KMS sends it: the caller, the operation, a request id."""
    caller = current_caller.get()
    principal = caller.principal_arn if caller else f"arn:aws:iam::{ctx.account_id}:root"
    metadata = {
        "awsPrincipalArn": principal,
        "kmsOperation": operation,
        "kmsRequestId": str(uuid.uuid4()),
    }
    if key_arn is not None:
        metadata["kmsKeyArn"] = key_arn
    return metadata


def _health_metadata(operation: str) -> dict[str, str]:
    return {"kmsRequestId": str(uuid.uuid4()), "kmsOperation": operation}


# This process's unwrapped proxy secrets, by (store id, wrapped secret): a new
# credential is a new key, so UpdateCustomKeyStore needs no invalidation here.
_SECRETS: dict[tuple[str, str], str] = {}


def client_for(ctx: KeyStoreContext, store: CustomKeyStore) -> XksClient:
    settings = store.xks
    cache_key = (store.store_id, settings["wrapped_secret"])
    secret = _SECRETS.get(cache_key)
    if secret is None:
        secret = unwrap_secret(
            ctx.hsm,
            _secret_aad(store.store_id, settings["access_key_id"]),
            base64.b64decode(settings["wrapped_secret"]),
        )
        if len(_SECRETS) > 256:
            _SECRETS.clear()
        _SECRETS[cache_key] = secret
    return XksClient(
        ProxyTarget(
            uri_endpoint=settings["uri_endpoint"],
            uri_path=settings["uri_path"],
            access_key_id=settings["access_key_id"],
            secret=secret,
            region=store.region,
            base_url=external_client.base_url(ctx.store, settings["uri_endpoint"]),
        )
    )


def _settings(
    ctx: KeyStoreContext,
    store_id: str,
    uri_endpoint: str | None,
    uri_path: str | None,
    credential: dict[str, str] | None,
    connectivity: str | None,
    vpc_service: str | None,
) -> dict[str, Any]:
    if connectivity not in (None, PUBLIC_ENDPOINT) or vpc_service is not None:
        raise UnsupportedOperationException(
            "Only XksProxyConnectivity PUBLIC_ENDPOINT is supported by this hsmkms release."
        )
    if uri_endpoint is None or not URI_ENDPOINT.match(uri_endpoint):
        raise ValidationException("XksProxyUriEndpoint must be https:// and a host name.")
    if uri_path is None or not URI_PATH.match(uri_path) or len(uri_path) > 128:
        raise ValidationException("XksProxyUriPath must be [/prefix]/kms/xks/v<n>.")
    if credential is None:
        raise ValidationException("An external key store needs XksProxyAuthenticationCredential.")
    access_key_id = credential.get("AccessKeyId", "")
    secret = credential.get("RawSecretAccessKey", "")
    if not ACCESS_KEY_ID.match(access_key_id) or not SECRET.match(secret):
        raise ValidationException(
            "XksProxyAuthenticationCredential: AccessKeyId is 20-30 of [A-Z2-7] and "
            "RawSecretAccessKey 43-64 of [a-zA-Z0-9/+=]."
        )
    wrapped = wrap_secret(ctx.hsm, _secret_aad(store_id, access_key_id), secret)
    return {
        "uri_endpoint": uri_endpoint,
        "uri_path": uri_path,
        "connectivity": PUBLIC_ENDPOINT,
        "access_key_id": access_key_id,
        "wrapped_secret": base64.b64encode(wrapped).decode(),
    }


def _check_unique(ctx: KeyStoreContext, reader: Any, store: CustomKeyStore) -> None:
    check_name_free(reader, ctx.region, store.name, store.store_id)
    for other in regional_stores(reader, ctx.region):
        if other.store_id == store.store_id:
            continue
        same = (other.xks.get("uri_endpoint"), other.xks.get("uri_path")) == (
            store.xks["uri_endpoint"],
            store.xks["uri_path"],
        )
        if other.store_type == EXTERNAL and same:
            raise XksProxyUriInUseException(
                f"XksProxyUriEndpoint and XksProxyUriPath are already those of custom key "
                f"store {other.store_id}."
            )


def _check_health(ctx: KeyStoreContext, store: CustomKeyStore, operation: str) -> None:
    try:
        client_for(ctx, store).health(_health_metadata(operation))
    except XksProxyFailure as failure:
        raise management_error(failure) from None


def create_external_store(
    ctx: KeyStoreContext,
    *,
    name: str,
    uri_endpoint: str | None,
    uri_path: str | None,
    credential: dict[str, str] | None,
    connectivity: str | None,
    vpc_service: str | None,
) -> Response:
    store_id = "cks-" + uuid.uuid4().hex[:17]
    settings = _settings(
        ctx, store_id, uri_endpoint, uri_path, credential, connectivity, vpc_service
    )
    store = CustomKeyStore(
        store_id=store_id,
        name=name,
        store_type=EXTERNAL,
        region=ctx.region,
        creation_date=ctx.clock(),
        xks=settings,
    )
    if len(regional_stores(ctx.store, ctx.region)) >= MAX_STORES:
        raise LimitExceededException(f"An account can have at most {MAX_STORES} custom key stores.")
    _check_unique(ctx, ctx.store, store)
    _check_health(ctx, store, "CreateCustomKeyStore")  # AWS tests the proxy first
    with ctx.store.transaction() as tx:
        _check_unique(ctx, tx, store)  # again: another node may have raced us
        put_store(tx, store)
    return {"CustomKeyStoreId": store_id}


def connect_code(ctx: KeyStoreContext, store: CustomKeyStore) -> str | None:
    """Connecting an external key store is a health check: None, or why it failed."""
    try:
        client_for(ctx, store).health(_health_metadata("ConnectCustomKeyStore"))
    except XksProxyFailure as failure:
        return connection_error_code(failure)
    return None


def update_external_store(
    ctx: KeyStoreContext,
    store: CustomKeyStore,
    *,
    uri_endpoint: str | None,
    uri_path: str | None,
    credential: dict[str, str] | None,
    connectivity: str | None,
    vpc_service: str | None,
) -> CustomKeyStore:
    """The store with its new proxy settings, checked against the proxy."""
    if connectivity not in (None, PUBLIC_ENDPOINT) or vpc_service is not None:
        raise UnsupportedOperationException(
            "Only XksProxyConnectivity PUBLIC_ENDPOINT is supported by this hsmkms release."
        )
    if uri_endpoint is None and uri_path is None and credential is None:
        return store
    if uri_endpoint is not None and store.connection_state != "DISCONNECTED":
        raise CustomKeyStoreInvalidStateException(
            f"Custom key store {store.store_id} must be disconnected to change its "
            "XksProxyUriEndpoint."
        )
    current = store.xks
    if credential is None:
        secret = client_for(ctx, store).target.secret
        credential = {"AccessKeyId": current["access_key_id"], "RawSecretAccessKey": secret}
    settings = _settings(
        ctx,
        store.store_id,
        uri_endpoint or current["uri_endpoint"],
        uri_path or current["uri_path"],
        credential,
        connectivity,
        vpc_service,
    )
    updated = replace(store, xks=settings)
    _check_unique(ctx, ctx.store, updated)
    _check_health(ctx, updated, "UpdateCustomKeyStore")
    return updated


def describe_entry(store: CustomKeyStore) -> Response:
    return {
        "XksProxyConfiguration": {
            "Connectivity": store.xks["connectivity"],
            "AccessKeyId": store.xks["access_key_id"],
            "UriEndpoint": store.xks["uri_endpoint"],
            "UriPath": store.xks["uri_path"],
        }
    }


def connected_store(ctx: KeyStoreContext, store_id: str) -> CustomKeyStore:
    store = get_store(ctx.store, store_id)
    if store is None or store.connection_state != "CONNECTED":
        raise KMSInvalidStateException(
            "This KMS key is in a custom key store that is not connected to its external "
            "key store proxy. Connect the external key store and try again."
        )
    return store
