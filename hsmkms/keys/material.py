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

Rotation claims its version number first: one transaction reads the key row and
writes the intent for current_version + 1, unless a fresh intent for that number
exists (another thread or process is rotating the key: wait for it, then claim
the next number). Only the claimant creates the object, so two processes never
make two objects for one version. Secret keys' fingerprints (CKA_CHECK_VALUE)
are kept with the version, so that duplicates left by older releases or by a
claimant that outlived the grace period can be repaired: reconcile keeps the
object the database names and destroys the others.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from hsmkms.errors import (
    ConflictException,
    KMSError,
    KMSInvalidStateException,
    LimitExceededException,
    NotFoundException,
)
from hsmkms.keys import lifecycle
from hsmkms.keys.availability import material_state, warn_if_not_carried
from hsmkms.keys.clock import Clock
from hsmkms.keys.metadata import ENCRYPTION_ALGORITHMS, PUBLIC_KEY
from hsmkms.keys.placement import KeyTokens, in_main_token
from hsmkms.keys.specs import RSA_ENCRYPTION, material_for
from hsmkms.store.base import MetadataStore, Writer
from hsmkms.store.model import (
    KeyRecord,
    KeyUsage,
    KeyVersion,
    PendingMaterial,
    RotationType,
    VersionState,
)
from hsmkms.token import Aes, EcPair, EdPair, HmacKey, MaterialKind, MaterialRef, RsaPair, Token

CrashHook = Callable[[str], None]
DEFAULT_GRACE = timedelta(minutes=10)
ROTATION_WAIT_SECONDS = 10.0  # for another process's rotation of the same key
FINGERPRINTS = "material-fingerprint"  # store documents: label -> {"check_value": hex}


def _no_crash(point: str) -> None:
    return None


def _intent(tx: Writer, ref: MaterialRef) -> PendingMaterial | None:
    for pending in tx.list_pending():
        if pending.key_id == ref.key_id and pending.version == ref.version:
            return pending
    return None


@dataclass
class ReconcileReport:
    orphans_destroyed: list[str] = field(default_factory=list)
    intents_cleared: list[str] = field(default_factory=list)
    material_missing: list[str] = field(default_factory=list)
    material_restored: list[str] = field(default_factory=list)
    unknown_objects: list[str] = field(default_factory=list)  # ours by label only: left alone
    duplicates_destroyed: list[str] = field(default_factory=list)  # "label: n destroyed"
    duplicates_unresolved: list[str] = field(default_factory=list)  # no fingerprint: left alone


class MaterialKeeper:
    def __init__(
        self,
        store: MetadataStore,
        hsm: Token,
        clock: Clock,
        tokens: KeyTokens,
        crash: CrashHook | None = None,
    ) -> None:
        self._store = store
        self._hsm = hsm
        # The main token, or a custom key store's, holds a key's material.
        self.tokens = tokens
        self._clock = clock
        self.crash = crash or _no_crash  # tests inject a hook that raises at a named point
        self._key_locks: dict[str, threading.Lock] = {}
        self._key_locks_guard = threading.Lock()

    def _generate(
        self, hsm: Token, ref: MaterialRef, kind: MaterialKind, claimed: bool = False
    ) -> str | None:
        """Create the object (the intent is written first unless already claimed);
        returns its fingerprint for the version's document, if the token has one."""
        hsm.require(kind)  # refuse before any intent is written
        if not claimed:
            with self._store.transaction() as tx:
                tx.add_pending(PendingMaterial(ref.key_id, ref.version, self._clock()))
        self.crash("after-intent")
        hsm.generate(ref, kind)
        self.crash("after-token")
        if not isinstance(kind, Aes | HmacKey):
            return None
        values = hsm.check_values(ref)
        return values[0].hex() if len(values) == 1 and values[0] else None

    @staticmethod
    def _remember(tx: Writer, ref: MaterialRef, fingerprint: str | None) -> None:
        if fingerprint is not None:
            tx.put_document(FINGERPRINTS, ref.label, json.dumps({"check_value": fingerprint}))

    def create(self, record: KeyRecord) -> KeyRecord:
        """Generate the key's material, then commit the key; returns it as committed
        (with its public key and the algorithms the token can do, for key pairs)."""
        ref = MaterialRef(record.key_id, record.current_version)
        kind = material_for(record.key_spec, record.key_usage)
        hsm = self.tokens.for_record(record)
        fingerprint = self._generate(hsm, ref, kind)
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
            self._remember(tx, ref, fingerprint)
            tx.remove_pending(ref.key_id, ref.version)
        if hsm is self.tokens.main:
            warn_if_not_carried(hsm, record, ref, kind)
        return record

    def _key_lock(self, key_id: str) -> threading.Lock:
        with self._key_locks_guard:
            return self._key_locks.setdefault(key_id, threading.Lock())

    def rotate(
        self,
        record: KeyRecord,
        rotation_type: RotationType,
        now: datetime,
        *,
        limit: int | None = None,
    ) -> KeyRecord:
        """Add a version. Threads of this process rotating one key take turns; other
        processes are waited for (ConflictException after ROTATION_WAIT_SECONDS).
        An automatic rotation already done by someone else is not repeated. `limit`
        caps on-demand rotations, checked against the row as it is when claimed."""
        hsm = self.tokens.for_record(record)
        with self._key_lock(record.key_id):
            claim = self._claim(hsm, record, rotation_type, limit)
            if isinstance(claim, KeyRecord):
                return claim  # nothing left to do
            ref, stamp = claim
            try:
                fingerprint = self._generate(
                    hsm, ref, material_for(record.key_spec, record.key_usage), claimed=True
                )
            except KMSError:
                self._release(hsm, ref, stamp)
                raise
            return self._commit_rotation(record, ref, stamp, rotation_type, now, fingerprint)

    def _release(self, hsm: Token, ref: MaterialRef, stamp: datetime) -> None:
        """After a token error: give the claim back so the next rotation need not wait
        for the grace period. If the object cannot be confirmed gone, the intent stays
        for reconcile."""
        try:
            hsm.destroy(ref)
            with self._store.transaction() as tx:
                intent = _intent(tx, ref)
                if intent is not None and intent.created_at == stamp:
                    tx.remove_pending(ref.key_id, ref.version)
        except KMSError:
            pass

    def _claim(
        self, hsm: Token, record: KeyRecord, rotation_type: RotationType, limit: int | None
    ) -> tuple[MaterialRef, datetime] | KeyRecord:
        """Claim the next version number in the transaction that reads the key row."""
        give_up = time.monotonic() + ROTATION_WAIT_SECONDS
        while True:
            with self._store.transaction() as tx:
                current = tx.get_key(record.key_id)
                if current is None:
                    raise NotFoundException(f"Key '{record.arn}' does not exist")
                if rotation_type is RotationType.AUTOMATIC:
                    if current.current_version != record.current_version:
                        return current  # rotated by another process's maintenance pass
                else:
                    lifecycle.require(current, lifecycle.Use.ROTATION)
                    if limit is not None and current.on_demand_rotations >= limit:
                        raise LimitExceededException(
                            f"{current.arn} has reached the limit of {limit} on-demand rotations."
                        )
                ref = MaterialRef(record.key_id, current.current_version + 1)
                now = self._clock()
                held = _intent(tx, ref)
                if held is None or now - held.created_at >= DEFAULT_GRACE:
                    if held is not None:  # a claimant that died: its object goes first
                        hsm.destroy(ref)
                    tx.add_pending(PendingMaterial(ref.key_id, ref.version, now))
                    return ref, now
            if time.monotonic() >= give_up:
                raise ConflictException(
                    f"{record.arn}: another rotation of this key is in progress. Retry later."
                )
            time.sleep(0.02)

    def _commit_rotation(
        self,
        record: KeyRecord,
        ref: MaterialRef,
        stamp: datetime,
        rotation_type: RotationType,
        now: datetime,
        fingerprint: str | None,
    ) -> KeyRecord:
        with self._store.transaction() as tx:
            current = tx.get_key(record.key_id)
            intent = _intent(tx, ref)
            ours = intent is not None and intent.created_at == stamp
            if current is None or not ours or current.current_version != ref.version - 1:
                # Deleted meanwhile, or our claim outlived the grace period and was
                # taken over: reconcile settles the object we made.
                raise ConflictException(f"{record.arn} changed during rotation. Retry later.")
            updated = replace(current, current_version=ref.version)
            if rotation_type is RotationType.ON_DEMAND:
                updated = replace(updated, on_demand_rotations=current.on_demand_rotations + 1)
            elif current.rotation_period_days:
                updated = replace(
                    updated, next_rotation_date=now + timedelta(days=current.rotation_period_days)
                )
            tx.put_version(KeyVersion(ref.key_id, ref.version, now, rotation_type))
            tx.put_key(updated)
            self._remember(tx, ref, fingerprint)
            tx.remove_pending(ref.key_id, ref.version)
        return updated

    def destroy(self, record: KeyRecord) -> bool:
        """Delete a key's rows, then its token objects; False when its custom key
        store is disconnected and the objects were left in that token."""
        return not self.destroy_all([record])

    def destroy_all(self, records: Sequence[KeyRecord]) -> list[KeyRecord]:
        """`destroy` for several keys (of distinct key ids) with one transaction each
        side of the token work; returns the keys whose objects were left in a
        disconnected custom key store's token."""
        now = self._clock()
        tokens: dict[str, Token | None] = {}
        for record in records:
            try:
                tokens[record.key_id] = self.tokens.for_record(record)
            except KMSInvalidStateException:
                tokens[record.key_id] = None
        with self._store.transaction() as tx:
            refs = {
                r.key_id: [MaterialRef(r.key_id, v.version) for v in tx.list_versions(r.key_id)]
                for r in records
            }
            for record in records:
                tx.delete_key(record.key_id)
                for ref in refs[record.key_id]:
                    tx.add_pending(PendingMaterial(ref.key_id, ref.version, now))
                    tx.delete_document(FINGERPRINTS, ref.label)
        self.crash("after-rows")
        for key_id, hsm in tokens.items():
            if hsm is not None:
                for ref in refs[key_id]:
                    hsm.destroy(ref)
        with self._store.transaction() as tx:
            for ref in (ref for key_refs in refs.values() for ref in key_refs):
                tx.remove_pending(ref.key_id, ref.version)
        return [record for record in records if tokens[record.key_id] is None]

    def reconcile(
        self, grace: timedelta = DEFAULT_GRACE, on_token: Callable[[KeyRecord], bool] | None = None
    ) -> ReconcileReport:
        """`on_token`: which keys' material this token holds (regions may have their own
        tokens); default every key outside custom key stores."""
        report = ReconcileReport()
        now = self._clock()
        census = self._hsm.material_census()
        in_token = set(census)
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
            # This pass checks the main token only (connecting a store checks its own).
            if in_main_token(record) and (on_token is None or on_token(record)):
                self._check_versions(record, versions, in_token, report)

        for ref in sorted(named & in_token - fresh_intents, key=lambda r: r.label):
            if census[ref] > 1:
                self._repair_duplicates(ref, report)
        unknown = in_token - named - fresh_intents
        report.unknown_objects.extend(sorted(ref.label for ref in unknown))
        return report

    def _repair_duplicates(self, ref: MaterialRef, report: ReconcileReport) -> None:
        """Several objects carry one version's name (a rotation race lost by an older
        release): keep the one whose fingerprint the database holds."""
        document = self._store.get_document(FINGERPRINTS, ref.label)
        if document is None:
            report.duplicates_unresolved.append(ref.label)
            return
        destroyed = self._hsm.keep_only(ref, bytes.fromhex(json.loads(document)["check_value"]))
        if destroyed:
            report.duplicates_destroyed.append(f"{ref.label}: {destroyed} destroyed")
        else:
            report.duplicates_unresolved.append(ref.label)

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
        present = {v.version for v in versions if MaterialRef(v.key_id, v.version) in in_token}
        updated, changed = material_state(record, versions, present)
        for version in changed:
            label = MaterialRef(version.key_id, version.version).label
            gone = version.state is VersionState.MISSING
            (report.material_missing if gone else report.material_restored).append(label)
        if not changed:
            return
        with self._store.transaction() as tx:
            for version in changed:
                tx.put_version(version)
            if updated is not record:
                tx.put_key(updated)
