"""Secondary authorization of XKS requests: one optional policy per key store (URI
prefix), in hsmkms's policy language, over the request's `requestMetadata`.

The policy is written as an identity policy (no Principal). Actions are
`xks:Encrypt`, `xks:Decrypt` and `xks:GetKeyMetadata` (GetHealthStatus is never
checked, as the specification requires); the resource is the hsmkms key's ARN.
Condition keys: `xks:AwsPrincipalArn` (also `aws:PrincipalArn`), `xks:KmsKeyArn`,
`xks:KmsOperation`, `xks:KmsRequestId`, `xks:KmsViaService`, `xks:AwsSourceVpc`
(also `aws:SourceVpc`), `xks:AwsSourceVpce` (also `aws:SourceVpce`) and
`xks:ExternalKeyId`; a policy naming any other key is refused. Without a policy every
authenticated request is allowed; with one, what no statement allows is denied.
"""

from __future__ import annotations

from collections.abc import Mapping

from hsmkms.errors import AccessDeniedException, NotFoundException
from hsmkms.policy.engine import Request, evaluate
from hsmkms.policy.model import ConditionKeys, Policy, parse_policy
from hsmkms.store.base import MetadataStore
from hsmkms.store.cache import GenerationCache

KIND = "xks-policy"
CACHE_SECONDS = 1.0
# requestMetadata field -> the condition keys it sets (lower-cased, as policies store them)
_KEYS = {
    "awsPrincipalArn": ("xks:awsprincipalarn", "aws:principalarn"),
    "kmsKeyArn": ("xks:kmskeyarn",),
    "kmsOperation": ("xks:kmsoperation",),
    "kmsRequestId": ("xks:kmsrequestid",),
    "kmsViaService": ("xks:kmsviaservice",),
    "awsSourceVpc": ("xks:awssourcevpc", "aws:sourcevpc"),
    "awsSourceVpce": ("xks:awssourcevpce", "aws:sourcevpce"),
}
# Every key a request sets: a policy naming another is refused when written.
XKS_KEYS = ConditionKeys(
    frozenset({"xks:externalkeyid", *(k for keys in _KEYS.values() for k in keys)}).__contains__,
    "an XKS request sets",
)


class XksPolicies:
    def __init__(self, store: MetadataStore, cache_seconds: float = CACHE_SECONDS) -> None:
        self._store = store
        self._cache: GenerationCache[Policy | None] = GenerationCache(store, cache_seconds)

    def put(self, uri_prefix: str, document: str) -> None:
        parse_policy(document, identity=True, keys=XKS_KEYS)  # MalformedPolicyDocumentException
        with self._store.transaction() as tx:
            tx.put_document(KIND, uri_prefix, document)
        self._cache.forget(uri_prefix)

    def remove(self, uri_prefix: str) -> None:
        with self._store.transaction() as tx:
            if tx.get_document(KIND, uri_prefix) is None:
                raise NotFoundException(f"Key store /{uri_prefix} has no XKS policy.")
            tx.delete_document(KIND, uri_prefix)
        self._cache.forget(uri_prefix)

    def get(self, uri_prefix: str) -> str | None:
        return self._store.get_document(KIND, uri_prefix)

    def _policy(self, uri_prefix: str) -> Policy | None:
        return self._cache.get(uri_prefix, lambda _: self._load(uri_prefix))

    def _load(self, uri_prefix: str) -> Policy | None:
        text = self._store.get_document(KIND, uri_prefix)
        return None if text is None else parse_policy(text, identity=True, stored=True)

    def require(
        self,
        uri_prefix: str,
        operation: str,
        key_arn: str,
        external_key_id: str,
        metadata: Mapping[str, str],
    ) -> None:
        """AccessDeniedException, naming the reason, unless the key store's policy allows."""
        policy = self._policy(uri_prefix)
        if policy is None:
            return
        context: dict[str, list[str]] = {"xks:externalkeyid": [external_key_id]}
        for field, keys in _KEYS.items():
            value = metadata.get(field)
            if value:
                for key in keys:
                    context[key] = [value]
        request = Request(metadata.get("awsPrincipalArn", ""), f"xks:{operation}", key_arn, context)
        decision = evaluate(request, None, [policy])
        if not decision.allowed:
            policy_of = f"the XKS policy of key store /{uri_prefix}"
            why = (
                f"an explicit deny in {policy_of} denies it"
                if decision.explicit
                else f"nothing in {policy_of} allows it"
            )  # which kind of refusal, never which statement
            raise AccessDeniedException(
                f"{request.principal or 'The caller'} is not authorized to perform "
                f"{request.action} on {key_arn} ({metadata.get('kmsOperation', '')}) "
                f"because {why}."
            )
