"""What `hsmkms apply` would change: the deployment as it is, read through the same
handlers the API uses (unrecorded reads), against the file. Each change runs later
through the KeyManager's operations, which record themselves, or (principals, XKS key
stores) through their stores with a record of the same name the CLI command writes.

Rules: keys are found by their aliases (all aliases of a key must name it, or nothing
yet); what the file leaves out of an entry (tags, policy, rotation, description) is left
as it is; tags and identity policies given are made exactly so; grants are found by
name, and one whose terms differ is revoked and made again. Nothing absent from the
file is deleted.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from hsmkms.apply.changes import Change, KeyHandle, Result, paged, same_json
from hsmkms.apply.document import Document, GrantSpec, KeySpec, PrincipalSpec, policy_text, secret
from hsmkms.apply.keys import plan_key
from hsmkms.audit.operator import operator_event
from hsmkms.config import ConfigError
from hsmkms.errors import KMSError, NoSuchEntityException
from hsmkms.library import KeyManager
from hsmkms.policy.principals import CredentialStore, PrincipalInfo
from hsmkms.xks.credentials import XksCredentialStore, normalize_prefix
from hsmkms.xks.policy import XksPolicies


class Planner:
    def __init__(self, km: KeyManager, file: Path, default_prefix: str) -> None:
        self.km = km
        self.reader = km.for_region(km.region)  # no audit trail: reads only
        self.file, self.base = file, file.parent
        self.default_prefix = default_prefix
        self.credentials = CredentialStore(km.store, km.hsm, km.clock)
        self.xks_credentials = XksCredentialStore(km.store, km.hsm, km.clock)
        self.xks_policies = XksPolicies(km.store)
        self.generated: list[dict[str, str]] = []  # secrets made now, printed once
        self.changes: list[Change] = []

    def plan(self, document: Document) -> list[Change]:
        for number, principal in enumerate(document.principals):
            self._principal(principal, f"{self.file}: principals[{number}]")
        aliases = {
            a["AliasName"]: a.get("TargetKeyId")
            for a in paged(lambda m: self.reader.list_aliases(marker=m), "Aliases")
        }
        for number, key in enumerate(document.keys):
            self._key(key, aliases, f"{self.file}: keys[{number}]")
        self._xks(document)
        return self.changes

    # -- recording what is not a KMS operation -----------------------------------------

    def _recorded(self, name: str, request: dict[str, Any], act: Callable[[], Any]) -> Result:
        record = self.km.audit.record if self.km.audit is not None else None
        try:
            result: Result = act()
        except Exception as exc:
            if record is not None:
                code = exc.code if isinstance(exc, KMSError) else type(exc).__name__
                record(
                    operator_event(
                        name,
                        parameters=request,
                        error_code=code,
                        error_message=str(exc),
                        region=self.km.region,
                        source="hsmkms.cli",
                    )
                )
            raise
        if record is not None:
            record(
                operator_event(
                    name,
                    parameters=request,
                    response=result,
                    region=self.km.region,
                    source="hsmkms.cli",
                )
            )
        return result

    def _add(
        self, action: str, target: str, details: dict[str, Any], run: Callable[[], Result]
    ) -> None:
        self.changes.append(Change(action, target, details, run))

    def _add_recorded(
        self,
        action: str,
        target: str,
        details: dict[str, Any],
        request: dict[str, Any],
        act: Callable[[], Any],
    ) -> None:
        """A change that is not a KMS operation, recorded as `action` with `request`."""
        self._add(action, target, details, partial(self._recorded, action, request, act))

    # -- principals -----------------------------------------------------------------------

    def _principal(self, spec: PrincipalSpec, place: str) -> None:
        arn, store = spec.arn, self.credentials
        try:
            info: PrincipalInfo | None = store.describe(arn)
        except NoSuchEntityException:
            info = None
        have = {k.access_key_id: k for k in (info.access_keys if info else [])}
        for number, key in enumerate(spec.access_keys):
            given = secret(self.base, key.secret_file, f"{place}.access_keys[{number}]")
            request = {"PrincipalArn": arn, "AccessKeyId": key.access_key_id}
            current = store.lookup(key.access_key_id)
            if current is not None and current.principal_arn != arn:
                raise ConfigError(
                    f"{place}.access_keys[{number}]: {key.access_key_id} belongs to "
                    f"{current.principal_arn}"
                )
            if current is not None and current.secret_access_key == given:
                continue
            shown = {"AccessKeyId": key.access_key_id}
            if current is not None:
                self._add_recorded(
                    "DeleteAccessKey",
                    arn,
                    shown,
                    request,
                    partial(store.delete_access_key, key.access_key_id),
                )
            self._add_recorded(
                "AddPrincipal",
                arn,
                shown,
                request,
                partial(_added, store.add, arn, key.access_key_id, given),
            )
        if spec.generate_access_key and not have and not spec.access_keys:
            self._add_recorded(
                "CreateAccessKey", arn, {}, {"PrincipalArn": arn}, partial(self._generate, arn)
            )
        if spec.policies is not None:
            current_policies = info.policies if info else {}
            for name, source in spec.policies.items():
                text = policy_text(source, self.base, f"{place}.policies.{name}")
                if name in current_policies and same_json(current_policies[name], text):
                    continue
                request = {"PrincipalArn": arn, "PolicyName": name, "PolicyDocument": text}
                self._add_recorded(
                    "AttachPrincipalPolicy",
                    arn,
                    {"PolicyName": name},
                    request,
                    partial(store.attach_policy, arn, name, text),
                )
            for name in sorted(set(current_policies) - set(spec.policies)):
                request = {"PrincipalArn": arn, "PolicyName": name}
                self._add_recorded(
                    "DeletePrincipalPolicy",
                    arn,
                    {"PolicyName": name},
                    request,
                    partial(store.detach_policy, arn, name),
                )
        if spec.tags is not None and (info.tags if info else {}) != spec.tags:
            tags = dict(spec.tags)
            self._add_recorded(
                "TagPrincipal",
                arn,
                {"Tags": tags},
                {"PrincipalArn": arn},
                partial(store.tag_principal, arn, tags),
            )

    def _generate(self, arn: str) -> Result:
        made = self.credentials.add(arn)
        self.generated.append(
            {
                "PrincipalArn": arn,
                "AccessKeyId": made.access_key_id,
                "SecretAccessKey": made.secret_access_key,
            }
        )
        return {"AccessKeyId": made.access_key_id}

    # -- keys -----------------------------------------------------------------------------

    def _key(self, spec: KeySpec, aliases: dict[str, str | None], place: str) -> None:
        targets = sorted({target for a in spec.aliases if (target := aliases.get(a))})
        if len(targets) > 1:
            raise ConfigError(
                f"{place}.aliases: name different keys ({', '.join(str(t) for t in targets)}): "
                "point them at one key first (hsmkms alias delete / create)"
            )
        handle = KeyHandle(targets[0] if targets else None)
        plan_key(self, spec, handle, aliases, place)

    def grant_matches(self, found: dict[str, Any], spec: GrantSpec) -> bool:
        return bool(
            found.get("GranteePrincipal") == spec.grantee
            and set(found.get("Operations", [])) == set(spec.operations)
            and found.get("RetiringPrincipal") == spec.retiring_principal
            and (found.get("Constraints") or None) == (spec.constraints or None)
        )

    # -- the XKS proxy's key stores ----------------------------------------------------------

    def _xks(self, document: Document) -> None:
        known = {c.access_key_id: c for c in self.xks_credentials.list()}
        for number, spec in enumerate(document.xks.credentials):
            place = f"{self.file}: xks.credentials[{number}]"
            prefix = normalize_prefix(spec.uri_prefix or self.default_prefix)
            given = secret(self.base, spec.secret_file, place)
            existing = known.get(spec.access_key_id)
            if existing is not None and existing.uri_prefix != prefix:
                raise ConfigError(
                    f"{place}: {spec.access_key_id} is a credential of /{existing.uri_prefix}"
                )
            if existing is not None:
                current = self.xks_credentials.lookup_for(prefix)(spec.access_key_id)
                if current is not None and current.secret_access_key == given:
                    continue
            request = {"AccessKeyId": spec.access_key_id}
            target = f"/{prefix}" if prefix else "/"
            if existing is not None:
                self._add_recorded(
                    "RemoveXksCredential",
                    target,
                    request,
                    request,
                    partial(self.xks_credentials.remove, spec.access_key_id),
                )
            self._add_recorded(
                "AddXksCredential",
                target,
                request,
                request,
                partial(_added, self.xks_credentials.add, prefix, spec.access_key_id, given),
            )
        for prefix_given, source in document.xks.policies.items():
            prefix = normalize_prefix(prefix_given)
            text = policy_text(source, self.base, f"{self.file}: xks.policies.{prefix_given}")
            policy = self.xks_policies.get(prefix)
            if policy is not None and same_json(policy, text):
                continue
            request = {
                "XksProxyUriPath": f"/{prefix}/kms/xks/v1".replace("//", "/"),
                "PolicyDocument": text,
            }
            self._add_recorded(
                "PutXksPolicy",
                f"/{prefix}" if prefix else "/",
                {},
                request,
                partial(self.xks_policies.put, prefix, text),
            )


def _added(add: Callable[..., Any], *arguments: Any) -> Result:
    """Add a credential; the answer names it, never its secret."""
    return {"AccessKeyId": add(*arguments).access_key_id}
