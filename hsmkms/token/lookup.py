"""Object searches that always finish, on the thread that started them.

python-pkcs11's `Session.get_key` stops iterating its search as soon as it has
seen two objects and raises MultipleObjectsReturned; the unfinished search keeps
the session's operation lock until the generator is collected, possibly on
another thread, where releasing it fails. The session is then locked forever and
every later call on it hangs. Here every search is read to its end (which calls
C_FindObjectsFinal and releases the lock on this thread) before anything is
counted or raised.
"""

from __future__ import annotations

import contextlib
from typing import Any

from pkcs11 import Attribute, ObjectClass
from pkcs11 import exceptions as p11

from hsmkms.errors import KMSInternalException
from hsmkms.token.templates import ObjectName


class DuplicateMaterial(KMSInternalException):
    """More than one token object carries one key-material version's name; the
    maintenance pass repairs this (see MaterialKeeper.reconcile)."""


def find_all(session: Any, attributes: dict[Attribute, Any]) -> list[Any]:
    """Every object matching, with the search finished before returning."""
    with contextlib.closing(session.get_objects(attributes)) as found:
        return list(found)


def find_named(session: Any, ref: ObjectName, object_class: ObjectClass) -> list[Any]:
    """Every object of this class carrying ref's label and id."""
    name = {Attribute.CLASS: object_class, Attribute.LABEL: ref.label, Attribute.ID: ref.cka_id}
    return find_all(session, name)


def find_one(session: Any, ref: ObjectName, object_class: ObjectClass) -> Any:
    """The one object of this class named by ref: NoSuchKey if none, DuplicateMaterial
    if several (the search is finished either way, so the session stays usable)."""
    objects = list({obj.handle: obj for obj in find_named(session, ref, object_class)}.values())
    if not objects:
        raise p11.NoSuchKey(f"no object labelled {ref.label}")
    if len(objects) > 1 and _same_material(objects):
        # Seen under load on SoftHSM2: one key listed twice while another process
        # rewrites the token's files. Equal fingerprints: the same material either way.
        return objects[0]
    if len(objects) > 1:
        raise DuplicateMaterial(
            f"{len(objects)} token objects carry the name {ref.label}; run `hsmkms maintain`"
        )
    return objects[0]


def _same_material(objects: list[Any]) -> bool:
    values = {check_value(obj) for obj in objects}
    return len(values) == 1 and None not in values


def _secret_keys(session: Any, ref: ObjectName) -> list[Any]:
    return find_all(session, {Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.LABEL: ref.label})


def check_value(obj: Any) -> bytes | None:
    """CKA_CHECK_VALUE (a key's public fingerprint), or None where the token has none."""
    try:
        value = obj[Attribute.CHECK_VALUE]
    except p11.PKCS11Error:
        return None
    return bytes(value) if value else None


def secret_check_values(session: Any, ref: ObjectName) -> list[bytes | None]:
    """The fingerprint of every secret-key object named by ref."""
    objects = _secret_keys(session, ref)
    return [check_value(obj) for obj in objects]


def keep_only(session: Any, ref: ObjectName, keep: bytes) -> int:
    """Destroy the secret-key objects named by ref whose fingerprint is not `keep`;
    returns how many were destroyed. Nothing is destroyed unless exactly one matches."""
    objects = _secret_keys(session, ref)
    matching = [obj for obj in objects if check_value(obj) == keep]
    if len(matching) != 1:
        return 0
    others = [obj for obj in objects if obj is not matching[0]]
    for obj in others:
        obj.destroy()
    return len(others)
