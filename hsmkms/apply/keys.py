"""The changes one key of an apply file needs: made (CreateKey with its description,
tags and policy), its aliases, description, tags, policy, rotation, grants and state.
Each runs as the KeyManager's operation, which records itself."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from hsmkms.apply.changes import KeyHandle, paged, same_json
from hsmkms.apply.document import KeySpec, policy_text
from hsmkms.config import ConfigError

if TYPE_CHECKING:
    from hsmkms.apply.plan import Planner


def _tag_list(tags: dict[str, str]) -> list[dict[str, str]]:
    return [{"TagKey": k, "TagValue": v} for k, v in sorted(tags.items())]


def plan_key(
    planner: Planner, spec: KeySpec, handle: KeyHandle, aliases: dict[str, str | None], place: str
) -> None:
    km, reader, add = planner.km, planner.reader, planner._add
    target = spec.aliases[0]
    policy = (
        None if spec.policy is None else policy_text(spec.policy, planner.base, place + ".policy")
    )
    meta: dict[str, Any] | None = None
    if handle.key_id is None:
        details: dict[str, Any] = {"KeySpec": spec.key_spec, "KeyUsage": spec.key_usage}
        arguments: dict[str, Any] = {
            "key_spec": spec.key_spec,
            "key_usage": spec.key_usage,
            "description": spec.description or "",
        }
        if spec.description:
            details["Description"] = spec.description
        if spec.tags:
            arguments["tags"] = _tag_list(spec.tags)
            details["Tags"] = dict(spec.tags)
        if policy is not None:
            arguments["policy"] = policy

        def create() -> dict[str, Any]:
            made = km.create_key(**arguments)["KeyMetadata"]["KeyId"]
            handle.key_id = made
            return {"KeyId": made}

        add("CreateKey", target, details, create)
    else:
        meta = reader.describe_key(key_id=handle.key_id)["KeyMetadata"]
        if (meta["KeySpec"], meta["KeyUsage"]) != (spec.key_spec, spec.key_usage):
            raise ConfigError(
                f"{place}: {target} names key {handle.key_id}, a {meta['KeySpec']} "
                f"{meta['KeyUsage']} key: a key's spec and usage cannot change"
            )
        if meta["KeyState"] in ("PendingDeletion", "PendingReplicaDeletion"):
            raise ConfigError(
                f"{place}: {target} names key {handle.key_id}, which is pending deletion: "
                "cancel the deletion (hsmkms key cancel-deletion) or delete the alias"
            )
    for alias in spec.aliases:
        if aliases.get(alias) is None:
            add(
                "CreateAlias",
                alias,
                {},
                handle.on_key(km.create_alias, "target_key_id", alias_name=alias),
            )

    if meta is not None:
        key_id = handle.id()  # for the reads; changes get the id when they run
        if spec.description is not None and meta.get("Description", "") != spec.description:
            add(
                "UpdateKeyDescription",
                target,
                {"Description": spec.description},
                handle.on_key(km.update_key_description, description=spec.description),
            )
        if spec.tags is not None:
            have = {
                t["TagKey"]: t["TagValue"]
                for t in paged(lambda m: reader.list_resource_tags(key_id=key_id, marker=m), "Tags")
            }
            changed = {k: v for k, v in spec.tags.items() if have.get(k) != v}
            extra = sorted(set(have) - set(spec.tags))
            if changed:
                add(
                    "TagResource",
                    target,
                    {"Tags": changed},
                    handle.on_key(km.tag_resource, tags=_tag_list(changed)),
                )
            if extra:
                add(
                    "UntagResource",
                    target,
                    {"TagKeys": extra},
                    handle.on_key(km.untag_resource, tag_keys=extra),
                )
        if policy is not None:
            have_policy = reader.get_key_policy(key_id=key_id, policy_name="default")["Policy"]
            if not same_json(have_policy, policy):
                add(
                    "PutKeyPolicy",
                    target,
                    {},
                    handle.on_key(km.put_key_policy, policy_name="default", policy=policy),
                )

    _rotation(planner, spec, handle, meta, target)
    _grants(planner, spec, handle, meta, target)
    if spec.enabled is not None:
        enabled_now = meta is None or meta["KeyState"] == "Enabled"
        if spec.enabled != enabled_now:
            name = "EnableKey" if spec.enabled else "DisableKey"
            add(name, target, {}, handle.on_key(km.enable_key if spec.enabled else km.disable_key))


def _rotation(
    planner: Planner, spec: KeySpec, handle: KeyHandle, meta: dict[str, Any] | None, target: str
) -> None:
    if spec.rotation is None:
        return
    km = planner.km
    enabled, period = False, None
    if meta is not None:
        status = planner.reader.get_key_rotation_status(key_id=handle.id())
        enabled, period = status["KeyRotationEnabled"], status.get("RotationPeriodInDays")
    wanted = spec.rotation
    if wanted.enabled and (not enabled or (wanted.period_days or 365) != period):
        details = {"RotationPeriodInDays": wanted.period_days or 365}
        planner._add(
            "EnableKeyRotation",
            target,
            details,
            handle.on_key(km.enable_key_rotation, rotation_period_in_days=wanted.period_days),
        )
    elif not wanted.enabled and enabled:
        planner._add("DisableKeyRotation", target, {}, handle.on_key(km.disable_key_rotation))


def _grants(
    planner: Planner, spec: KeySpec, handle: KeyHandle, meta: dict[str, Any] | None, target: str
) -> None:
    if not spec.grants:
        return
    km = planner.km
    existing: dict[str, dict[str, Any]] = {}
    if meta is not None:
        reader, key_id = planner.reader, handle.id()
        listing = paged(lambda m: reader.list_grants(key_id=key_id, marker=m), "Grants")
        existing = {g["Name"]: g for g in listing if g.get("Name")}
    for grant in spec.grants:
        found = existing.get(grant.name)
        if found is not None and planner.grant_matches(found, grant):
            continue
        if found is not None:
            planner._add(
                "RevokeGrant",
                target,
                {"Name": grant.name},
                handle.on_key(km.revoke_grant, grant_id=found["GrantId"]),
            )
        arguments: dict[str, Any] = {
            "name": grant.name,
            "grantee_principal": grant.grantee,
            "operations": list(grant.operations),
        }
        if grant.retiring_principal:
            arguments["retiring_principal"] = grant.retiring_principal
        if grant.constraints:
            arguments["constraints"] = json.loads(json.dumps(grant.constraints))
        details = {
            "Name": grant.name,
            "GranteePrincipal": grant.grantee,
            "Operations": list(grant.operations),
        }
        planner._add("CreateGrant", target, details, handle.on_key(km.create_grant, **arguments))
