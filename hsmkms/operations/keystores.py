"""Custom key stores: CreateCustomKeyStore, DescribeCustomKeyStores,
ConnectCustomKeyStore, DisconnectCustomKeyStore, UpdateCustomKeyStore,
DeleteCustomKeyStore.

An AWS_CLOUDHSM store is a PKCS#11 token the operator registered as a "cluster"
(`hsmkms keystore add`); KeyStorePassword is that token's user PIN, kept wrapped
by the main token. Connecting logs in; keys of a store that is not connected are
Unavailable, as in AWS KMS.
"""

from __future__ import annotations

import secrets
from dataclasses import replace

from cryptography import x509

from hsmkms.errors import (
    CloudHsmClusterInUseException,
    CloudHsmClusterNotFoundException,
    CustomKeyStoreHasCMKsException,
    CustomKeyStoreInvalidStateException,
    CustomKeyStoreNotFoundException,
    IncorrectTrustAnchorException,
    LimitExceededException,
    UnsupportedOperationException,
    ValidationException,
)
from hsmkms.keystores import external_stores
from hsmkms.keystores.cloudhsm import ConnectFailed, get_cluster, wrap_password
from hsmkms.keystores.records import (
    CLOUDHSM,
    EXTERNAL,
    STORES,
    CustomKeyStore,
    check_name_free,
    existing_store,
    get_store,
    put_store,
    regional_stores,
    set_keys_available,
)
from hsmkms.operations.checks import check_limit, offset_page
from hsmkms.operations.context import OperationContext, Response
from hsmkms.token import MaterialRef

MAX_STORES = 10  # AWS's default quota of custom key stores per account and region


def _regional(ctx: OperationContext) -> list[CustomKeyStore]:
    return regional_stores(ctx.store, ctx.region)


def _existing(ctx: OperationContext, store_id: str) -> CustomKeyStore:
    return existing_store(ctx.store, ctx.region, store_id)


def _check_trust_anchor(certificate: str) -> None:
    try:
        x509.load_pem_x509_certificate(certificate.encode())
    except ValueError:
        raise IncorrectTrustAnchorException(
            "TrustAnchorCertificate is not a PEM-encoded X.509 certificate."
        ) from None


def _check_cluster(ctx: OperationContext, cluster_id: str, store_id: str | None) -> None:
    if get_cluster(ctx.store, cluster_id) is None:
        raise CloudHsmClusterNotFoundException(
            f"Cluster {cluster_id} is not registered with this server (hsmkms keystore add)."
        )
    for other in _regional(ctx):
        if other.cluster_id == cluster_id and other.store_id != store_id:
            raise CloudHsmClusterInUseException(
                f"Cluster {cluster_id} is already the cluster of custom key store {other.store_id}."
            )


def create_custom_key_store(
    ctx: OperationContext,
    *,
    custom_key_store_name: str,
    cloud_hsm_cluster_id: str | None = None,
    trust_anchor_certificate: str | None = None,
    key_store_password: str | None = None,
    custom_key_store_type: str = CLOUDHSM,
    xks_proxy_uri_endpoint: str | None = None,
    xks_proxy_uri_path: str | None = None,
    xks_proxy_vpc_endpoint_service_name: str | None = None,
    xks_proxy_vpc_endpoint_service_owner: str | None = None,
    xks_proxy_authentication_credential: dict[str, str] | None = None,
    xks_proxy_connectivity: str | None = None,
) -> Response:
    if custom_key_store_type == EXTERNAL:
        return external_stores.create_external_store(
            ctx,
            name=custom_key_store_name,
            uri_endpoint=xks_proxy_uri_endpoint,
            uri_path=xks_proxy_uri_path,
            credential=xks_proxy_authentication_credential,
            connectivity=xks_proxy_connectivity,
            vpc_service=xks_proxy_vpc_endpoint_service_name or xks_proxy_vpc_endpoint_service_owner,
        )
    if custom_key_store_type != CLOUDHSM:
        raise UnsupportedOperationException(
            f"CustomKeyStoreType {custom_key_store_type} is not supported by this hsmkms release."
        )
    if (
        cloud_hsm_cluster_id is None
        or trust_anchor_certificate is None
        or (key_store_password is None)
    ):
        raise ValidationException(
            "An AWS_CLOUDHSM key store needs CloudHsmClusterId, TrustAnchorCertificate and "
            "KeyStorePassword."
        )
    _check_trust_anchor(trust_anchor_certificate)
    check_name_free(ctx.store, ctx.region, custom_key_store_name)
    if len(_regional(ctx)) >= MAX_STORES:
        raise LimitExceededException(f"An account can have at most {MAX_STORES} custom key stores.")
    _check_cluster(ctx, cloud_hsm_cluster_id, None)
    store_id = "cks-" + secrets.token_hex(9)[:17]
    store = CustomKeyStore(
        store_id=store_id,
        name=custom_key_store_name,
        store_type=CLOUDHSM,
        region=ctx.region,
        creation_date=ctx.clock(),
        cluster_id=cloud_hsm_cluster_id,
        trust_anchor=trust_anchor_certificate,
        wrapped_password=wrap_password(ctx.hsm, store_id, key_store_password),
    )
    with ctx.store.transaction() as tx:
        # Checked again inside the transaction: another node may have taken the name.
        check_name_free(tx, ctx.region, custom_key_store_name)
        put_store(tx, store)
    return {"CustomKeyStoreId": store_id}


def _entry(store: CustomKeyStore) -> Response:
    entry: Response = {
        "CustomKeyStoreId": store.store_id,
        "CustomKeyStoreName": store.name,
        "ConnectionState": store.connection_state,
        "CreationDate": store.creation_date,
        "CustomKeyStoreType": store.store_type,
    }
    if store.cluster_id is not None:
        entry["CloudHsmClusterId"] = store.cluster_id
    if store.trust_anchor is not None:
        entry["TrustAnchorCertificate"] = store.trust_anchor
    if store.connection_state == "FAILED" and store.error_code:
        entry["ConnectionErrorCode"] = store.error_code
    if store.store_type == EXTERNAL:
        entry.update(external_stores.describe_entry(store))
    return entry


def describe_custom_key_stores(
    ctx: OperationContext,
    *,
    custom_key_store_id: str | None = None,
    custom_key_store_name: str | None = None,
    limit: int | None = None,
    marker: str | None = None,
) -> Response:
    size = check_limit(limit, 1000, 100)
    stores = sorted(_regional(ctx), key=lambda s: (s.creation_date, s.store_id))
    if custom_key_store_id is not None:
        stores = [_existing(ctx, custom_key_store_id)]
    if custom_key_store_name is not None:
        stores = [s for s in stores if s.name == custom_key_store_name]
        if not stores:
            raise CustomKeyStoreNotFoundException(
                f"Custom key store {custom_key_store_name} does not exist."
            )
    return offset_page("CustomKeyStores", [_entry(s) for s in stores], size, marker)


def connect_custom_key_store(ctx: OperationContext, *, custom_key_store_id: str) -> Response:
    store = _existing(ctx, custom_key_store_id)
    if store.connection_state in ("DISCONNECTING", "FAILED"):
        raise CustomKeyStoreInvalidStateException(
            f"Custom key store {store.store_id} is {store.connection_state}: disconnect it, "
            "then connect it."
        )
    if store.connection_state == "CONNECTED":
        return {}
    if store.store_type == EXTERNAL:
        code = external_stores.connect_code(ctx, store)
        # Its keys' inner layer is material in the main token: checked there.
        in_token = None if code else ctx.hsm.material_refs()
        _set_state(ctx, store.store_id, "FAILED" if code else "CONNECTED", code, in_token)
        return {}
    cluster = get_cluster(ctx.store, store.cluster_id or "")
    try:
        if cluster is None:
            raise ConnectFailed("CLUSTER_NOT_FOUND")
        token = ctx.tokens.open(store, cluster)
    except ConnectFailed as exc:
        # As in AWS the call succeeds; the store shows FAILED and why.
        _set_state(ctx, store.store_id, "FAILED", exc.code)
        return {}
    # Keys whose material this token lacks (a restore, a cluster that lost it) stay
    # Unavailable (hsmkms.keys.availability).
    _set_state(ctx, store.store_id, "CONNECTED", None, token.material_refs())
    return {}


def disconnect_custom_key_store(ctx: OperationContext, *, custom_key_store_id: str) -> Response:
    store = _existing(ctx, custom_key_store_id)
    if store.connection_state in ("DISCONNECTING", "DISCONNECTED"):
        raise CustomKeyStoreInvalidStateException(
            f"Custom key store {store.store_id} is already {store.connection_state}."
        )
    _set_state(ctx, store.store_id, "DISCONNECTED", None)
    ctx.tokens.close(store.store_id)
    return {}


def _set_state(
    ctx: OperationContext,
    store_id: str,
    state: str,
    error: str | None,
    in_token: set[MaterialRef] | None = None,
) -> None:
    with ctx.store.transaction() as tx:
        current = get_store(tx, store_id)
        if current is None:
            raise CustomKeyStoreNotFoundException(f"Custom key store {store_id} does not exist.")
        put_store(tx, replace(current, connection_state=state, error_code=error))
        set_keys_available(tx, store_id, state == "CONNECTED", in_token)
    ctx.changed()


def update_custom_key_store(
    ctx: OperationContext,
    *,
    custom_key_store_id: str,
    new_custom_key_store_name: str | None = None,
    key_store_password: str | None = None,
    cloud_hsm_cluster_id: str | None = None,
    xks_proxy_uri_endpoint: str | None = None,
    xks_proxy_uri_path: str | None = None,
    xks_proxy_vpc_endpoint_service_name: str | None = None,
    xks_proxy_vpc_endpoint_service_owner: str | None = None,
    xks_proxy_authentication_credential: dict[str, str] | None = None,
    xks_proxy_connectivity: str | None = None,
) -> Response:
    store = _existing(ctx, custom_key_store_id)
    if store.store_type == EXTERNAL:
        if key_store_password is not None or cloud_hsm_cluster_id is not None:
            raise ValidationException(
                "KeyStorePassword and CloudHsmClusterId are settings of AWS_CLOUDHSM key stores."
            )
        store = external_stores.update_external_store(
            ctx,
            store,
            uri_endpoint=xks_proxy_uri_endpoint,
            uri_path=xks_proxy_uri_path,
            credential=xks_proxy_authentication_credential,
            connectivity=xks_proxy_connectivity,
            vpc_service=xks_proxy_vpc_endpoint_service_name or xks_proxy_vpc_endpoint_service_owner,
        )
    elif any(
        v is not None
        for v in (
            xks_proxy_uri_endpoint,
            xks_proxy_uri_path,
            xks_proxy_authentication_credential,
            xks_proxy_connectivity,
            xks_proxy_vpc_endpoint_service_name,
            xks_proxy_vpc_endpoint_service_owner,
        )
    ):
        raise ValidationException("XksProxy* settings belong to EXTERNAL_KEY_STORE key stores.")
    other_changes = key_store_password is not None or cloud_hsm_cluster_id is not None
    if other_changes and store.connection_state != "DISCONNECTED":
        raise CustomKeyStoreInvalidStateException(
            f"Custom key store {store.store_id} must be disconnected to change its password or "
            "cluster; only its name can change while it is connected."
        )
    if new_custom_key_store_name is not None:
        check_name_free(ctx.store, ctx.region, new_custom_key_store_name, store.store_id)
    if cloud_hsm_cluster_id is not None:
        _check_cluster(ctx, cloud_hsm_cluster_id, store.store_id)
    updated = store
    if new_custom_key_store_name is not None:
        updated = replace(updated, name=new_custom_key_store_name)
    if cloud_hsm_cluster_id is not None:
        updated = replace(updated, cluster_id=cloud_hsm_cluster_id)
    if key_store_password is not None:
        wrapped = wrap_password(ctx.hsm, store.store_id, key_store_password)
        updated = replace(updated, wrapped_password=wrapped)
    with ctx.store.transaction() as tx:
        current = get_store(tx, store.store_id)
        if current is None or current.connection_state != store.connection_state:
            raise CustomKeyStoreInvalidStateException(
                f"Custom key store {store.store_id} changed state meanwhile; retry."
            )
        put_store(tx, updated)
    return {}


def delete_custom_key_store(ctx: OperationContext, *, custom_key_store_id: str) -> Response:
    store = _existing(ctx, custom_key_store_id)
    if store.connection_state != "DISCONNECTED":
        raise CustomKeyStoreInvalidStateException(
            f"Custom key store {store.store_id} must be disconnected before it is deleted."
        )
    with ctx.store.transaction() as tx:
        after: str | None = None
        while page := tx.list_keys(None, after, 500):
            after = page[-1].key_id
            if any(k.custom_key_store_id == store.store_id for k in page):
                raise CustomKeyStoreHasCMKsException(
                    f"Custom key store {store.store_id} still has KMS keys (including keys "
                    "pending deletion); delete them first."
                )
        tx.delete_document(STORES, store.store_id)
    return {}
