"""Resource tags with KMS's limits."""

from __future__ import annotations

import pytest

from hsmkms.errors import KMSInvalidStateException, NotFoundException
from hsmkms.keys.tags import TagException
from hsmkms.library import KeyManager
from hsmkms.store.sqlite import SqliteStore


def tags(**pairs: str) -> list[dict[str, str]]:
    return [{"TagKey": k, "TagValue": v} for k, v in pairs.items()]


def test_tags_on_create_and_after(km: KeyManager, store: SqliteStore) -> None:
    key_id = km.create_key(tags=tags(team="payments", env="prod"))["KeyMetadata"]["KeyId"]
    assert km.list_resource_tags(key_id=key_id)["Tags"] == tags(env="prod", team="payments")
    km.tag_resource(key_id=key_id, tags=tags(env="staging", owner="ops"))
    km.untag_resource(key_id=key_id, tag_keys=["team", "absent"])
    listed = km.list_resource_tags(key_id=f"arn:aws:kms:us-east-1:111122223333:key/{key_id}")
    assert listed == {"Tags": tags(env="staging", owner="ops"), "Truncated": False}
    record = store.get_key(key_id)
    assert record is not None and record.tags == {"env": "staging", "owner": "ops"}


def test_tag_limits_and_reserved_prefix(km: KeyManager) -> None:
    key_id = km.create_key()["KeyMetadata"]["KeyId"]
    km.tag_resource(key_id=key_id, tags=[{"TagKey": f"k{n}", "TagValue": ""} for n in range(50)])
    with pytest.raises(TagException, match=r"^Too many tags$"):
        km.tag_resource(key_id=key_id, tags=tags(one_more="x"))
    km.tag_resource(key_id=key_id, tags=tags(k0="replacing an existing key is fine"))
    for bad in (tags(**{"aws:owner": "x"}), tags(**{"AWS:Owner": "x"}),
                [{"TagKey": "a", "TagValue": "1"}, {"TagKey": "a", "TagValue": "2"}]):  # fmt: skip
        with pytest.raises(TagException):
            km.tag_resource(key_id=key_id, tags=bad)
    with pytest.raises(TagException):
        km.create_key(tags=[{"TagKey": f"k{n}", "TagValue": ""} for n in range(51)])


def test_tag_pages(km: KeyManager) -> None:
    key_id = km.create_key(tags=[{"TagKey": f"t{n:02}", "TagValue": str(n)} for n in range(7)])[
        "KeyMetadata"
    ]["KeyId"]
    first = km.list_resource_tags(key_id=key_id, limit=5)
    rest = km.list_resource_tags(key_id=key_id, limit=5, marker=first["NextMarker"])
    assert [t["TagKey"] for t in first["Tags"] + rest["Tags"]] == [f"t{n:02}" for n in range(7)]
    assert first["Truncated"] and not rest["Truncated"]


def test_tagging_rules_by_key_form_and_state(km: KeyManager) -> None:
    key_id = km.create_key()["KeyMetadata"]["KeyId"]
    km.create_alias(alias_name="alias/tagged", target_key_id=key_id)
    with pytest.raises(NotFoundException):
        km.tag_resource(key_id="alias/tagged", tags=tags(a="b"))
    km.disable_key(key_id=key_id)
    km.tag_resource(key_id=key_id, tags=tags(a="b"))  # disabled keys take tags
    km.schedule_key_deletion(key_id=key_id)
    with pytest.raises(KMSInvalidStateException):
        km.tag_resource(key_id=key_id, tags=tags(c="d"))
    assert km.list_resource_tags(key_id=key_id)["Tags"] == tags(a="b")
