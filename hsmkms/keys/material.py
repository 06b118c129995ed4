"""Creating, rotating and destroying key material so that a crash loses nothing.

Order for create and rotate:
  1. commit an intent row (pending_material) naming the object about to exist;
  2. generate the object in the token;
  3. commit the key/version rows and drop the intent, in one transaction.
A crash after 1 or 2 leaves an intent (and maybe an object no row names): the
key or version is invisible and unusable, and `reconcile` removes both once the
intent is older than the grace period. Destroy removes the rows and writes an
intent per version in one transaction, then destroys the objects, then drops
the intents: a crash leaves intents that reconcile completes.

Reconcile destroys only objects an intent names and no row names. An object with
our label that neither names (another deployment sharing the token, a database
restored from an older backup) is reported, never destroyed.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from hsmkms.errors import KMSInvalidStateException, NotFoundException
from hsmkms.keys.clock import Clock
from hsmkms.keys.keystores import TokenRegistry
from hsmkms.keys.metadata import ENCRYPTION_ALGORITHMS, PUBLIC_KEY
from hsmkms.keys.model import (
    KeyRecord,
    KeyState,
    KeyUsage,
    KeyVersion,
    PendingMaterial,
    RotationType,
    VersionState,
)
from hsmkms.keys.specs import RSA_ENCRYPTION, material_for
from hsmkms.store.base import MetadataStore
from hsmkms.token import Hsm, MaterialRef
from hsmkms.token.kinds import EcPair, EdPair, MaterialKind, RsaPair

CrashHook = Callable[[str], None]
DEFAULT_GRACE = timedelta(minutes=10)
# Written into KeyRecord.extra while material is missing, to restore the state later.
STATE_BEFORE_UNAVAILABLE = "state_before_unavailable"


def _no_crash(point: str) -> None:
    return None


@dataclass
class ReconcileReport:
    orphans_destroyed: list[str] = field(default_factory=list)
    intents_cleared: list[str] = field(default_factory=list)
    material_missing: list[str] = field(default_factory=list)
    material_restored: list[str] = field(default_factory=list)
    unknown_objects: list[str] = field(default_factory=list)  # ours by label only: left alone


class MaterialKeeper:
    def __init__(
        self,
        store: MetadataStore,
        hsm: Hsm,
        clock: Clock,
        crash: CrashHook | None = None,
        tokens: TokenRegistry | None = None,
    ) -> None:
        self._store = store
        self._hsm = hsm
        self._clock = clock
        self.crash = crash or _no_crash  # tests inject a hook that raises at a named point
        self.tokens = tokens or TokenRegistry(hsm, store)

    def _generate(self, hsm: Hsm, ref: MaterialRef, kind: MaterialKind) -> None:
        hsm.require(kind)  # refuse before any intent is written
        with self._store.transaction() as tx:
            tx.add_pending(PendingMaterial(ref.key_id, ref.version, self._clock()))
        self.crash("after-intent")
        hsm.generate(ref, kind)
        self.crash("after-token")

    def create(self, record: KeyRecord) -> KeyRecord:
        """Generate the key's material, then commit the key; returns it as committed
        (with its public key and the algorithms the token can do, for key pairs)."""
        ref = MaterialRef(record.key_id, record.current_version)
        kind = material_for(record.key_spec, record.key_usage)
        hsm = self.tokens.for_record(record)
        self._generate(hsm, ref, kind)
        if isinstance(kind, RsaPair | EcPair | EdPair):
            extra = {
                **record.extra,
                PUBLIC_KEY: base64.b64encode(hsm.public_key_der(ref)).decode(),
            }
            if kind.__class__ is RsaPair and record.key_usage is KeyUsage.ENCRYPT_DECRYPT:
                extra[ENCRYPTION_ALGORITHMS] = [
                    name for name, digest in RSA_ENCRYPTION.items() if hsm.oaep_supported(digest)
                ]
            record = replace(record, extra=extra)
        with self._store.transaction() as tx:
            tx.put_key(record)
            tx.put_version(KeyVersion(ref.key_id, ref.version, record.creation_date, None))
            tx.remove_pending(ref.key_id, ref.version)
        return record

    def rotate(self, record: KeyRecord, rotation_type: RotationType, now: datetime) -> KeyRecord:
        ref = MaterialRef(record.key_id, record.current_version + 1)
        hsm = self.tokens.for_record(record)
        self._generate(hsm, ref, material_for(record.key_spec, record.key_usage))
        with self._store.transaction() as tx:
            current = tx.get_key(record.key_id)
            if current is None or current.current_version != record.current_version:
                # Deleted or rotated meanwhile: leave the intent for reconcile to clear.
                raise NotFoundException(f"Key '{record.arn}' changed during rotation")
            updated = replace(current, current_version=ref.version)
            if rotation_type is RotationType.ON_DEMAND:
                updated = replace(updated, on_demand_rotations=current.on_demand_rotations + 1)
            elif current.rotation_period_days:
                updated = replace(
                    updated, next_rotation_date=now + timedelta(days=current.rotation_period_days)
                )
            tx.put_version(KeyVersion(ref.key_id, ref.version, now, rotation_type))
            tx.put_key(updated)
            tx.remove_pending(ref.key_id, ref.version)
        return updated

    def destroy(self, record: KeyRecord) -> bool:
        """Delete a key's rows, then its token objects; False when its custom key
        store is disconnected and the objects were left in that token."""
        now = self._clock()
        try:
            hsm: Hsm | None = self.tokens.for_record(record)
        except KMSInvalidStateException:
            hsm = None
        with self._store.transaction() as tx:
            versions = tx.list_versions(record.key_id)
            tx.delete_key(record.key_id)
            for version in versions:
                tx.add_pending(PendingMaterial(record.key_id, version.version, now))
        self.crash("after-rows")
        if hsm is not None:
            for version in versions:
                hsm.destroy(MaterialRef(record.key_id, version.version))
        with self._store.transaction() as tx:
            for version in versions:
                tx.remove_pending(record.key_id, version.version)
        return hsm is not None

    def reconcile(
        self, grace: timedelta = DEFAULT_GRACE, on_token: Callable[[KeyRecord], bool] | None = None
    ) -> ReconcileReport:
        """`on_token`: which keys' material this token holds (regions may have their own
        tokens); default every key outside custom key stores."""
        report = ReconcileReport()
        now = self._clock()
        in_token = self._hsm.material_refs()
        fresh_intents = set()
        for intent in self._store.list_pending():
            ref = MaterialRef(intent.key_id, intent.version)
            if now - intent.created_at < grace:
                fresh_intents.add(ref)  # maybe still being created by someone
                continue
            named_by_row = any(
                v.version == intent.version for v in self._store.list_versions(intent.key_id)
            )
            if ref in in_token and not named_by_row:
                self._hsm.destroy(ref)
                in_token.discard(ref)
                report.orphans_destroyed.append(ref.label)
            with self._store.transaction() as tx:
                tx.remove_pending(intent.key_id, intent.version)
            report.intents_cleared.append(ref.label)

        named: set[MaterialRef] = set()
        for record in self._all_keys():
            versions = self._store.list_versions(record.key_id)
            named.update(MaterialRef(v.key_id, v.version) for v in versions)
            # This pass checks the main token only.
            if record.custom_key_store_id is None and (on_token is None or on_token(record)):
                self._check_versions(record, versions, in_token, report)

        unknown = in_token - named - fresh_intents
        report.unknown_objects.extend(sorted(ref.label for ref in unknown))
        return report

    def _all_keys(self) -> list[KeyRecord]:
        keys: list[KeyRecord] = []
        after: str | None = None
        while page := self._store.list_keys(None, after, 500):
            keys.extend(page)
            after = page[-1].key_id
        return keys

    def _check_versions(
        self,
        record: KeyRecord,
        versions: list[KeyVersion],
        in_token: set[MaterialRef],
        report: ReconcileReport,
    ) -> None:
        """Mark versions whose object vanished (or came back); a key whose current
        material is missing becomes Unavailable until it returns."""
        changed: list[KeyVersion] = []
        for version in versions:
            ref = MaterialRef(version.key_id, version.version)
            present = ref in in_token
            if not present and version.state is VersionState.ACTIVE:
                changed.append(replace(version, state=VersionState.MISSING))
                report.material_missing.append(ref.label)
            elif present and version.state is VersionState.MISSING:
                changed.append(replace(version, state=VersionState.ACTIVE))
                report.material_restored.append(ref.label)
        if not changed:
            return
        current_missing = MaterialRef(record.key_id, record.current_version) not in in_token
        updated = record
        if current_missing and record.state is not KeyState.UNAVAILABLE:
            extra = {**record.extra, STATE_BEFORE_UNAVAILABLE: record.state.value}
            updated = replace(record, state=KeyState.UNAVAILABLE, extra=extra)
        elif not current_missing and record.state is KeyState.UNAVAILABLE:
            extra = dict(record.extra)
            previous = KeyState(extra.pop(STATE_BEFORE_UNAVAILABLE, KeyState.ENABLED.value))
            updated = replace(record, state=previous, extra=extra)
        with self._store.transaction() as tx:
            for version in changed:
                tx.put_version(version)
            if updated is not record:
                tx.put_key(updated)
