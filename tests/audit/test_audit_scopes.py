"""The token's record of each trail, in process against the session's token (SoftHSM2,
or NSS softokn, whose records go to the database): deployments sharing one token
(scopes), a lost trail, an operator's new trail, a trail of an older release."""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from hsmkms.audit.checkpoint import CheckpointWriter
from hsmkms.audit.files import genesis, trail_id
from hsmkms.audit.log import AuditLog, verify
from hsmkms.audit.retire import start_new_trail
from hsmkms.audit.shelf import DatabaseShelf
from hsmkms.audit.trails import ACTIVE, Registry, TrailRecord, now, register
from hsmkms.errors import (
    AuditTrailConflictException,
    KMSInvalidStateException,
    ValidationException,
)
from hsmkms.store.sqlite import SqliteStore
from hsmkms.token import Hsm
from hsmkms.token.audit import TokenAuditAnchor


@pytest.fixture
def shelf(tmp_path: Path) -> DatabaseShelf:
    return DatabaseShelf(SqliteStore(tmp_path / "shelf.db"))


def deployment(hsm: Hsm, shelf: DatabaseShelf) -> TokenAuditAnchor:
    """One deployment's view of the shared token: its own scope."""
    return TokenAuditAnchor(hsm, shelf, scope=uuid.uuid4().hex)


def write(directory: Path, anchor: TokenAuditAnchor, count: int = 3) -> None:
    log = AuditLog(directory, anchor=anchor, node_id="n")
    for number in range(count):
        log.record({"eventName": "Encrypt", "n": number})
    log.close()


def trail_of(directory: Path) -> str:
    return (directory / "trail.id").read_text().strip()


def test_a_trail_is_registered_before_its_first_record(
    tmp_path: Path, hsm: Hsm, shelf: DatabaseShelf
) -> None:
    anchor = deployment(hsm, shelf)
    log = AuditLog(tmp_path, anchor=anchor, node_id="n")
    try:
        registry = Registry.load(anchor)
        assert registry.known(anchor.scope) == [log.trail]
        assert "n.w0" in registry.checkpoints[log.trail]  # the chain, announced
    finally:
        log.close()
    assert oct((tmp_path / "trail.id").stat().st_mode & 0o777) == "0o600"


def test_deployments_sharing_a_token_keep_apart(
    tmp_path: Path, hsm: Hsm, shelf: DatabaseShelf
) -> None:
    ours, theirs = deployment(hsm, shelf), deployment(hsm, shelf)
    write(tmp_path / "ours", ours)
    write(tmp_path / "theirs", theirs)
    ours_alone = verify(tmp_path / "ours", ours)
    assert ours_alone.ok  # their trail is not ours to miss, but it is mentioned
    assert any("other scope(s)" in note for note in ours_alone.notes), ours_alone.notes
    assert verify(tmp_path / "theirs", theirs).ok

    shutil.rmtree(tmp_path / "ours")
    shutil.copytree(tmp_path / "theirs", tmp_path / "ours")  # their genuine trail
    result = verify(tmp_path / "ours", ours)
    assert not result.ok
    assert f"belongs to scope {theirs.scope!r}" in result.problem
    with pytest.raises(AuditTrailConflictException, match="another deployment's trail"):
        AuditLog(tmp_path / "ours", anchor=ours, node_id="n")


def test_a_lost_trail_stops_every_writer_until_an_operator_retires_it(
    tmp_path: Path, hsm: Hsm, shelf: DatabaseShelf
) -> None:
    anchor = deployment(hsm, shelf)
    write(tmp_path, anchor)
    old = trail_of(tmp_path)
    shutil.rmtree(tmp_path)
    result = verify(tmp_path, anchor)
    assert not result.ok and old in result.problem and "missing" in result.problem
    assert "chain n.w0 up to record 3" in result.problem  # what the token still knows
    with pytest.raises(AuditTrailConflictException, match=old):
        AuditLog(tmp_path, anchor=anchor, node_id="n")
    assert not (tmp_path / "trail.id").exists()

    started = start_new_trail(tmp_path, anchor, "restored from nothing", "ops@host")
    assert [r["Trail"] for r in started.retired] == [old]
    write(tmp_path, anchor)
    result = verify(tmp_path, anchor)
    assert result.ok, result.problems
    (retired,) = result.retired
    assert retired["Reason"] == "restored from nothing" and retired["RetiredBy"] == "ops@host"
    assert retired["Records"].startswith("no longer on disk")
    record = Registry.load(anchor).records[trail_of(tmp_path)]
    assert record.replaces == (old,) and record.reason == "restored from nothing"


def test_records_the_token_never_saw_are_never_adopted(
    tmp_path: Path, hsm: Hsm, shelf: DatabaseShelf
) -> None:
    """Even by a deployment whose token knows no trail yet: no first checkpoint is ever
    signed over records nobody vouched for."""
    anchor = deployment(hsm, shelf)
    (tmp_path / "n.w0.000001.jsonl").write_text(
        json.dumps({"eventName": "Decrypt", "previousHash": genesis("n.w0")}) + "\n"
    )
    with pytest.raises(AuditTrailConflictException, match=r"no trail\.id"):
        AuditLog(tmp_path, anchor=anchor, node_id="n")
    (tmp_path / "trail.id").write_text(uuid.uuid4().hex + "\n")  # with an id of its own
    with pytest.raises(AuditTrailConflictException, match="the token never saw"):
        AuditLog(tmp_path, anchor=anchor, node_id="n")
    assert "is unknown to the token" in " ".join(verify(tmp_path, anchor).problems)
    assert Registry.load(anchor).known(anchor.scope) == []


def test_new_trail_needs_a_reason_and_idle_writers(
    tmp_path: Path, hsm: Hsm, shelf: DatabaseShelf
) -> None:
    anchor = deployment(hsm, shelf)
    log = AuditLog(tmp_path, anchor=anchor, node_id="n")
    try:
        with pytest.raises(KMSInvalidStateException, match="is writing the trail"):
            start_new_trail(tmp_path, anchor, "busy", "ops@host")
    finally:
        log.close()
    for reason in ("", "   ", "x" * 1025):
        with pytest.raises(ValidationException, match="reason"):
            start_new_trail(tmp_path, anchor, reason, "ops@host")
    assert verify(tmp_path, anchor).ok  # nothing was retired


def test_a_trail_of_an_older_release_is_adopted(
    tmp_path: Path, hsm: Hsm, shelf: DatabaseShelf
) -> None:
    """Checkpoints in the token, no record of the trail (written before records existed)."""
    anchor = deployment(hsm, shelf)
    unanchored = AuditLog(tmp_path, node_id="n")
    unanchored.record({"eventName": "Encrypt"})
    unanchored.close()
    trail, segment = trail_of(tmp_path), "n.w0.000001.jsonl"
    head = json.loads((tmp_path / segment).read_text())["hash"]
    CheckpointWriter(tmp_path, trail, "n.w0", anchor).write(1, head, segment)
    assert trail not in Registry.load(anchor).records
    assert "not registered in the token yet" in " ".join(verify(tmp_path, anchor).notes)

    write(tmp_path, anchor)  # starts: registers the trail it found
    assert Registry.load(anchor).records[trail].scope == anchor.scope
    assert verify(tmp_path, anchor).ok


class Interleaved(TokenAuditAnchor):
    """The real anchor, with another process's next steps run right after its first
    scan of the token: the interleaving of two processes starting on one data dir."""

    def __init__(self, hsm: Hsm, shelf: DatabaseShelf, then: Callable[[], None]) -> None:
        super().__init__(hsm, shelf, scope=uuid.uuid4().hex)
        self._then: Callable[[], None] | None = then

    def load_everything(self) -> tuple[dict[str, list[bytes]], dict[str, list[bytes]]]:
        seen = super().load_everything()
        then, self._then = self._then, None
        if then is not None:
            then()
        return seen


def test_a_process_starting_beside_another_is_not_refused(
    tmp_path: Path, hsm: Hsm, shelf: DatabaseShelf
) -> None:
    """The other process made trail.id; between our scan of the token and our look at
    the directory it registers the trail and writes its chain's first file."""
    trail = trail_id(tmp_path, create=True) or ""

    def other_process_goes_on() -> None:
        register(anchor, TrailRecord(trail, anchor.scope, ACTIVE, now()))
        (tmp_path / "other.w0.checkpoints.jsonl").write_text("")

    anchor = Interleaved(hsm, shelf, other_process_goes_on)
    AuditLog(tmp_path, anchor=anchor, node_id="n").close()
