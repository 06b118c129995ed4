"""What the token knows about the trail, against an attacker who can write the data dir
but has no PIN: a deleted, forged, swapped or foreign trail is found by the real
`hsmkms audit verify` (non-zero, with its JSON verdict on stdout), no command or server
starts a new trail over one the token knows, and only `hsmkms audit new-trail --reason`
retires one, in the trail itself."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from hsmkms.audit.files import genesis, seal
from tests.cli.test_cli import Cli, stop, wait_healthy
from tests.conftest import free_port

pytestmark = pytest.mark.skipif(
    os.environ.get("HSMKMS_TEST_TOKEN", "softhsm") != "softhsm",
    reason="each deployment makes its own SoftHSM2 token (hsmkms init)",
)


def deployment(directory: Path) -> Cli:
    """`hsmkms init` and one audited action: a trail the token knows."""
    directory.mkdir(parents=True, exist_ok=True)
    cli = Cli(directory / "data")
    cli.ok("init")
    cli.ok("key", "create", "--description", "before the attack")
    return cli


def audit_dir(cli: Cli) -> Path:
    return Path(cli.env["HSMKMS_DATA_DIR"]) / "audit"


def trail_of(cli: Cli) -> str:
    return (audit_dir(cli) / "trail.id").read_text().strip()


def verdict(cli: Cli) -> tuple[int, dict[str, Any], str]:
    """Exit code, the JSON verdict (always on stdout) and stderr of `audit verify`."""
    result = cli.run("audit", "verify")
    return result.returncode, json.loads(result.stdout), result.stderr


def failed_verdict(cli: Cli) -> dict[str, Any]:
    code, found, stderr = verdict(cli)
    assert code == 1, found
    assert found["Valid"] is False and found["Problems"]
    assert stderr.count("\n") == 1 and stderr.startswith("hsmkms: "), stderr  # one line
    return found


def forge_chain(directory: Path, chain: str, count: int) -> None:
    """A well-formed chain: what anyone who can write the directory can make."""
    previous, lines = genesis(chain), []
    for number in range(1, count + 1):
        event = {"eventName": "Decrypt", "eventSource": "kms.amazonaws.com",
                 "userIdentity": {"arn": "arn:aws:iam::111122223333:user/framed"},
                 "auditSequence": number}  # fmt: skip
        line, previous = seal(event, previous)
        lines.append(line)
    (directory / f"{chain}.000001.jsonl").write_text("".join(lines))


def starts(cli: Cli, *options: str) -> subprocess.CompletedProcess[str] | None:
    """`hsmkms serve`: None when it came up (it is stopped again), else its exit."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "hsmkms.cli", "serve", "--port", str(port), *options],
        env={**cli.env, "HSMKMS_MAINTENANCE_SECONDS": "0", "HSMKMS_WORKERS": "1"}, cwd=cli.cwd,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        stdout, stderr = process.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        stop(process)  # type: ignore[arg-type]
        return None
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def test_a_deleted_trail_is_missing_and_nothing_starts_over_it(tmp_path: Path) -> None:
    cli = deployment(tmp_path)
    trail = trail_of(cli)
    code, before, _ = verdict(cli)
    assert code == 0 and before["Valid"] is True

    shutil.rmtree(audit_dir(cli))  # rm -rf DATA/audit: no PIN needed
    found = failed_verdict(cli)
    assert found["Records"] == 0
    assert any(trail in p and "missing" in p for p in found["Problems"]), found["Problems"]
    refused = cli.fails("key", "list")  # no CLI action starts a new trail over it
    assert trail in refused and "audit new-trail" in refused
    server = starts(cli)  # nor does the server
    assert server is not None and server.returncode != 0
    assert trail in server.stderr and "Traceback" not in server.stderr
    assert not (audit_dir(cli) / "trail.id").exists()
    assert before["Trail"] == trail


def test_a_forged_trail_without_trail_id_is_refused(tmp_path: Path) -> None:
    cli = deployment(tmp_path)
    trail = trail_of(cli)
    shutil.rmtree(audit_dir(cli))
    audit_dir(cli).mkdir()
    forge_chain(audit_dir(cli), "ops.w0", 2)  # two records, no trail.id

    server = starts(cli, "--workers", "2")
    assert server is not None and server.returncode != 0, "a server signed over the forgery"
    assert "no trail.id" in server.stderr and "Traceback" not in server.stderr
    assert not (audit_dir(cli) / "trail.id").exists()
    found = failed_verdict(cli)
    problems = " | ".join(found["Problems"])
    assert "trail.id is missing" in problems and trail in problems


def test_a_swapped_trail_id_is_an_alarm(tmp_path: Path) -> None:
    cli = deployment(tmp_path)
    trail = trail_of(cli)
    audit = audit_dir(cli)
    other = uuid.uuid4().hex
    (audit / "trail.id").write_text(other + "\n")
    for history in audit.glob("*.checkpoints.jsonl"):
        history.unlink()  # the checkpoints that name the old id go too

    found = failed_verdict(cli)
    problems = " | ".join(found["Problems"])
    assert f"trail.id says {other}" in problems and trail in problems
    refused = cli.fails("key", "list")
    assert trail in refused and other in refused


def test_another_deployments_trail_is_caught(tmp_path: Path) -> None:
    ours, theirs = deployment(tmp_path / "ours"), deployment(tmp_path / "theirs")
    trail = trail_of(ours)
    shutil.rmtree(audit_dir(ours))
    shutil.copytree(audit_dir(theirs), audit_dir(ours))
    for history in audit_dir(ours).glob("*.checkpoints.jsonl"):
        history.unlink()  # their MACs would give the copy away at once

    found = failed_verdict(ours)
    problems = " | ".join(found["Problems"])
    assert trail in problems and "missing" in problems
    assert f"trail {trail_of(theirs)} is unknown to the token" in problems
    assert "audit new-trail" in ours.fails("key", "list")


def test_a_chain_injected_into_a_valid_trail_is_caught(tmp_path: Path) -> None:
    cli = deployment(tmp_path)
    forge_chain(audit_dir(cli), "evil.w0", 2)
    found = failed_verdict(cli)
    assert any(p.startswith("evil.w0: unknown to the token") for p in found["Problems"]), found


def test_a_cut_trail_still_prints_its_verdict(tmp_path: Path) -> None:
    cli = deployment(tmp_path)
    cli.ok("key", "list")
    (segment,) = audit_dir(cli).glob("*.000001.jsonl")
    lines = segment.read_text().splitlines(keepends=True)
    segment.write_text("".join(lines[:1]))  # the tail a checkpoint covers is cut
    found = failed_verdict(cli)
    assert "were removed (the tail was cut)" in found["Problems"][0]
    assert found["Chains"] and found["Records"] == 1


# -- the operator's way out: audit new-trail ---------------------------------------


def query(cli: Cli) -> list[dict[str, Any]]:
    return [json.loads(line) for line in cli.run("audit", "query").stdout.splitlines()]


def test_new_trail_retires_a_lost_trail_on_the_record(tmp_path: Path) -> None:
    cli = deployment(tmp_path)
    old = trail_of(cli)
    shutil.rmtree(audit_dir(cli))
    assert "the following arguments are required: --reason" in cli.run("audit", "new-trail").stderr
    started = cli.ok("audit", "new-trail", "--reason", "disk of node 1 replaced")
    new = trail_of(cli)
    assert started["Trail"] == new != old
    assert [r["Trail"] for r in started["RetiredTrails"]] == [old]

    code, found, _ = verdict(cli)
    assert code == 0 and found["Valid"] is True and found["Trail"] == new
    (retired,) = found["RetiredTrails"]
    assert retired["Trail"] == old and retired["Reason"] == "disk of node 1 replaced"
    assert retired["RetiredBy"] and retired["Retired"][:4].isdigit()
    assert retired["ReplacedBy"] == new
    assert "no longer on disk" in retired["Records"]  # said plainly: the records are gone
    assert any(old in note and "retired by operator on" in note for note in found["Notes"])

    (first, *_) = query(cli)
    assert first["eventName"] == "StartAuditTrail" and first["auditSequence"] == 1
    assert first["requestParameters"] == {"Reason": "disk of node 1 replaced"}
    assert first["responseElements"]["Trail"] == new
    assert [r["Trail"] for r in first["responseElements"]["RetiredTrails"]] == [old]
    assert first["userIdentity"]["type"] == "Operator"
    cli.ok("key", "list")  # work goes on in the new trail


def test_new_trail_archives_the_old_records_and_verify_still_checks_them(
    tmp_path: Path,
) -> None:
    cli = deployment(tmp_path)
    old = trail_of(cli)
    cli.ok("audit", "new-trail", "--reason", "yearly rotation")
    archive = audit_dir(cli) / "retired" / old
    assert (archive / "trail.id").read_text().strip() == old
    code, found, _ = verdict(cli)
    assert code == 0, found
    (retired,) = found["RetiredTrails"]
    assert retired["Records"].startswith(f"archived in retired/{old}: 2 records verified")

    (segment,) = archive.glob("*.000001.jsonl")
    segment.write_text(segment.read_text().replace("before the attack", "innocent"))
    found = failed_verdict(cli)  # an archive is evidence: tampering with it is found
    assert any(f"retired/{old}" in p for p in found["Problems"]), found["Problems"]

    shutil.rmtree(audit_dir(cli) / "retired")  # and its loss is plain to see
    code, found, _ = verdict(cli)
    assert code == 0 and "no longer on disk" in found["RetiredTrails"][0]["Records"]


def test_a_retired_trail_put_back_is_refused(tmp_path: Path) -> None:
    cli = deployment(tmp_path)
    old = trail_of(cli)
    cli.ok("audit", "new-trail", "--reason", "rotation")
    audit = audit_dir(cli)
    for path in audit.iterdir():
        if path.is_file():
            path.unlink()
    for path in (audit / "retired" / old).iterdir():
        path.rename(audit / path.name)
    refused = cli.fails("key", "list")
    assert old in refused and "retired" in refused
    problems = " | ".join(failed_verdict(cli)["Problems"])
    assert f"{old} was retired" in problems


def test_new_trail_waits_for_the_writers_to_stop(tmp_path: Path) -> None:
    cli = deployment(tmp_path)
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "hsmkms.cli", "serve", "--port", str(port)],
        env={**cli.env, "HSMKMS_MAINTENANCE_SECONDS": "0", "HSMKMS_WORKERS": "1"}, cwd=cli.cwd,
    )  # fmt: skip
    try:
        wait_healthy(f"http://127.0.0.1:{port}", server)
        refused = cli.fails("audit", "new-trail", "--reason", "while serving")
        assert "is writing the trail" in refused
    finally:
        stop(server)
    assert verdict(cli)[0] == 0
