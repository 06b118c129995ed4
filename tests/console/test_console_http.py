"""The console over HTTP, as a browser without script would use it, against a real
`hsmkms serve` on a real token: who may see and do what, CSRF, sessions, the audit
trail. The browser tests (test_console_browser.py) drive the same pages in Chromium."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import sqlite3
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from tests.console.console_support import Browserless, Deployment, make_deployment, serving

pytestmark = pytest.mark.needs_token(
    "softhsm", reason="the console is served by `hsmkms serve` over its own SoftHSM2 token"
)


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    made = make_deployment(tmp_path_factory.mktemp("console"))
    with serving(made) as url:
        made.url = url
        yield made


@pytest.fixture
def key_id(deployment: Deployment) -> str:
    kms = deployment.kms()
    key: str = kms.create_key(Description='=HYPERLINK("x")')["KeyMetadata"]["KeyId"]
    return key


def signed_in(deployment: Deployment, name: str = "custodian") -> Browserless:
    browser = Browserless(deployment.url)
    answer = browser.sign_in(*deployment.keys[name])
    assert answer.status_code == 303 and answer.headers["location"] == "/console/keys"
    return browser


def test_sign_in_sets_a_strict_http_only_cookie_and_keeps_no_secret(
    deployment: Deployment,
) -> None:
    browser = Browserless(deployment.url)
    answer = browser.sign_in(*deployment.keys["custodian"])
    cookie = next(
        c for c in answer.headers.get_list("set-cookie") if c.startswith("hsmkms_console=")
    )
    token = cookie.split(";")[0].split("=", 1)[1]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/console" in cookie
    assert "Secure" not in cookie  # plain HTTP on loopback; Secure under TLS
    page = browser.http.get("/console/keys")
    assert page.status_code == 200 and "custodian" in page.text
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "unsafe-inline" not in csp
    with sqlite3.connect(deployment.directory / "data" / "hsmkms.db") as db:
        stored = " ".join(body for (body,) in db.execute("SELECT body FROM documents"))
    secret = deployment.keys["custodian"][1]
    assert secret not in stored and token not in stored
    assert hashlib.sha256(token.encode()).hexdigest() in " ".join(
        doc for (doc,) in sqlite3.connect(deployment.directory / "data" / "hsmkms.db").execute(
            "SELECT doc_id FROM documents")
    )  # fmt: skip


def test_a_wrong_secret_is_refused_and_audited_without_the_secret(deployment: Deployment) -> None:
    browser = Browserless(deployment.url)
    access_key_id = deployment.keys["reader"][0]
    answer = browser.sign_in(access_key_id, "not-the-secret-at-all")
    assert answer.status_code == 401 and "not valid" in answer.text
    assert browser.http.get("/console/keys").headers["location"].startswith("/console/signin")
    failures = [
        r
        for r in deployment.audit_records()
        if r["eventName"] == "ConsoleLogin"
        and r.get("errorCode")
        and r["additionalEventData"]["claimedAccessKeyId"] == access_key_id
    ]
    assert failures and failures[-1]["userAgent"] == "hsmkms-console"
    assert failures[-1]["sourceIPAddress"] == "127.0.0.1"
    assert "not-the-secret-at-all" not in json.dumps(deployment.audit_records())


def test_a_forged_form_post_without_the_csrf_token_is_refused(
    deployment: Deployment, key_id: str
) -> None:
    browser = signed_in(deployment)
    refused = browser.post(f"/console/keys/{key_id}/disable")
    assert refused.status_code == 403 and "CSRF" in refused.text
    wrong = browser.post(f"/console/keys/{key_id}/disable", csrf="forged-token-value")
    assert wrong.status_code == 403
    token = browser.csrf()
    other_site = browser.http.post(f"/console/keys/{key_id}/disable", data={"csrf": token},
                                   headers={"origin": "http://evil.example"})  # fmt: skip
    assert other_site.status_code == 403
    state = deployment.kms().describe_key(KeyId=key_id)["KeyMetadata"]["KeyState"]
    assert state == "Enabled"


def test_disabling_from_the_console_disables_for_boto3_and_is_audited(
    deployment: Deployment, key_id: str
) -> None:
    browser = signed_in(deployment)
    done = browser.post(f"/console/keys/{key_id}/disable", csrf=browser.csrf())
    assert done.status_code == 303
    with pytest.raises(ClientError) as failed:
        deployment.kms("reader").encrypt(KeyId=key_id, Plaintext=b"x")
    assert failed.value.response["Error"]["Code"] == "DisabledException"
    record = [r for r in deployment.audit_records() if r["eventName"] == "DisableKey"
              and key_id in json.dumps(r.get("resources"))][-1]  # fmt: skip
    assert record["userIdentity"]["arn"] == deployment.arn("custodian")
    assert record["userAgent"] == "hsmkms-console"
    assert record["sourceIPAddress"] == "127.0.0.1" and "errorCode" not in record
    browser.post(f"/console/keys/{key_id}/enable", csrf=browser.csrf())
    assert deployment.kms().describe_key(KeyId=key_id)["KeyMetadata"]["KeyState"] == "Enabled"


@pytest.mark.parametrize("name", ["nobody", "outsider"])
def test_a_principal_without_permission_sees_access_denied_and_no_key_data(
    deployment: Deployment, key_id: str, name: str
) -> None:
    browser = signed_in(deployment, name)
    description = deployment.kms().describe_key(KeyId=key_id)["KeyMetadata"]["Description"]
    for path in (
        f"/console/keys/{key_id}",
        "/console/audit",
        "/console/evidence.zip?since=2026-01-01",
    ):
        page = browser.http.get(path)
        assert page.status_code in (403, 404), path
        # AWS's refusal names the key asked for (the URL did); nothing about it is shown
        assert "HYPERLINK" not in page.text and description not in page.text
        assert "SYMMETRIC_DEFAULT" not in page.text and "Enabled" not in page.text
    listing = browser.http.get("/console/keys")
    # nobody: ListKeys refused; another account: its own account, empty here
    assert listing.status_code == (403 if name == "nobody" else 200)
    assert key_id[:8] not in listing.text
    disable = browser.post(
        f"/console/keys/{key_id}/disable", csrf=browser.csrf("/console/evidence")
    )
    assert disable.status_code in (403, 404)
    assert deployment.kms().describe_key(KeyId=key_id)["KeyMetadata"]["KeyState"] == "Enabled"


def test_an_explicit_deny_wins_in_the_console_as_in_the_api(
    deployment: Deployment, key_id: str
) -> None:
    browser = signed_in(deployment, "denied")
    assert browser.http.get(f"/console/keys/{key_id}").status_code == 200  # reads are allowed
    refused = browser.post(f"/console/keys/{key_id}/disable", csrf=browser.csrf())
    assert refused.status_code == 403 and "explicit deny" in refused.text.lower()
    assert deployment.kms().describe_key(KeyId=key_id)["KeyMetadata"]["KeyState"] == "Enabled"
    record = [r for r in deployment.audit_records() if r["eventName"] == "DisableKey"
              and r["userIdentity"]["arn"] == deployment.arn("denied")][-1]  # fmt: skip
    assert record["errorCode"] == "AccessDeniedException"
    assert record["userAgent"] == "hsmkms-console"


def test_kms_star_does_not_cover_reading_the_audit_trail(
    deployment: Deployment, key_id: str
) -> None:
    browser = signed_in(deployment, "reader")
    assert browser.http.get("/console/audit").status_code == 403
    key_page = browser.http.get(f"/console/keys/{key_id}")
    assert key_page.status_code == 200 and "hsmkms:ReadAuditTrail" in key_page.text
    assert 'id="usage-chart"' not in key_page.text
    refused = [r for r in deployment.audit_records() if r["eventName"] == "SearchAuditTrail"
               and r["userIdentity"]["arn"] == deployment.arn("reader")]  # fmt: skip
    assert refused and refused[-1]["errorCode"] == "AccessDeniedException"
    assert refused[-1]["eventSource"] == "hsmkms.console"


def test_a_disabled_access_key_ends_the_session_at_once(deployment: Deployment) -> None:
    arn = "arn:aws:iam::111122223333:user/temporary"
    credential = deployment.cli.ok("principal", "add", "--arn", arn)
    browser = Browserless(deployment.url)
    assert (
        browser.sign_in(credential["AccessKeyId"], credential["SecretAccessKey"]).status_code == 303
    )
    assert browser.http.get("/console/keys").status_code == 403  # signed in, no policy
    deployment.cli.ok("principal", "access-key", "disable", credential["AccessKeyId"])
    page = browser.http.get("/console/keys")
    assert page.status_code == 303 and page.headers["location"] == "/console/signin?reason=revoked"
    again = browser.sign_in(credential["AccessKeyId"], credential["SecretAccessKey"])
    assert again.status_code == 401  # Inactive keys are refused, as by the API


def test_signing_out_ends_the_session_for_the_cookie_too(deployment: Deployment) -> None:
    browser = signed_in(deployment)
    cookie = browser.http.cookies.get("hsmkms_console")
    assert browser.post("/console/signout", csrf=browser.csrf()).status_code == 303
    replay = Browserless(deployment.url)
    replay.http.cookies.set("hsmkms_console", cookie or "", path="/console")
    assert replay.http.get("/console/keys").status_code == 303


def test_schedule_deletion_needs_its_confirmation(deployment: Deployment, key_id: str) -> None:
    browser = signed_in(deployment)
    confirm = browser.http.get(f"/console/keys/{key_id}/schedule-deletion")
    assert confirm.status_code == 200 and "Type the key ID" in confirm.text
    token = browser.csrf()
    path = f"/console/keys/{key_id}/schedule-deletion"
    assert browser.post(path, csrf=token, days="7", confirm="yes").status_code == 400
    assert deployment.kms().describe_key(KeyId=key_id)["KeyMetadata"]["KeyState"] == "Enabled"
    assert browser.post(path, csrf=token, days="7", confirm=key_id).status_code == 303
    metadata = deployment.kms().describe_key(KeyId=key_id)["KeyMetadata"]
    assert (
        metadata["KeyState"] == "PendingDeletion" and metadata["PendingDeletionWindowInDays"] == 7
    )
    assert browser.post(f"/console/keys/{key_id}/cancel-deletion", csrf=token).status_code == 303
    assert deployment.kms().describe_key(KeyId=key_id)["KeyMetadata"]["KeyState"] == "Disabled"


def test_inventory_csv_lists_keys_and_defuses_formulas(deployment: Deployment, key_id: str) -> None:
    browser = signed_in(deployment)
    exported = browser.http.get("/console/keys.csv")
    assert exported.status_code == 200 and "attachment" in exported.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    mine = [row for row in rows if row["Key ARN"].endswith(key_id)]
    assert mine and mine[0]["Description"] == '\'=HYPERLINK("x")'
    assert mine[0]["State"] == "Enabled" and mine[0]["Rotation"] == "off"


def test_evidence_pack_holds_the_period_and_a_valid_verdict(
    deployment: Deployment, key_id: str
) -> None:
    kms = deployment.kms()
    for _ in range(3):
        kms.encrypt(KeyId=key_id, Plaintext=b"evidence")
    browser = signed_in(deployment)
    answer = browser.http.get("/console/evidence.zip?since=2026-01-01&until=2100-01-01")
    assert answer.status_code == 200 and answer.headers["content-type"] == "application/zip"
    archive = zipfile.ZipFile(io.BytesIO(answer.content))
    manifest = json.loads(archive.read("manifest.json"))
    for name, digest in manifest["files"].items():
        assert hashlib.sha256(archive.read(name)).hexdigest() == digest
    assert manifest["generatedBy"] == deployment.arn("custodian") and manifest["auditTrailValid"]
    usage = list(csv.DictReader(io.StringIO(archive.read("usage.csv").decode())))
    assert {"Operation": "Encrypt", "Calls": "3"}.items() <= next(
        row for row in usage if row["Key ARN"].endswith(key_id) and row["Operation"] == "Encrypt"
    ).items()
    assert json.loads(archive.read("audit-verification.json"))["Valid"] is True
    rotation = archive.read("rotation.csv").decode()
    assert key_id in rotation and "not rotating" in rotation


def test_a_session_ends_after_its_lifetime_and_failed_sign_ins_are_throttled(
    deployment: Deployment,
) -> None:
    limits = {"console_session_seconds": "2", "console_signin_failures": "3",
              "console_signin_window_seconds": "60"}  # fmt: skip
    with serving(deployment, **limits) as url:
        browser = Browserless(url)
        assert browser.sign_in(*deployment.keys["custodian"]).status_code == 303
        assert browser.http.get("/console/keys").status_code == 200
        time.sleep(2.5)
        expired = browser.http.get("/console/keys")
        assert expired.status_code == 303
        assert expired.headers["location"] == "/console/signin?reason=expired"
        access_key_id, secret = deployment.keys["reader"]
        for _ in range(3):
            assert browser.sign_in(access_key_id, "wrong").status_code == 401
        throttled = browser.sign_in(access_key_id, secret)  # the right secret, too late
        assert throttled.status_code == 429 and "Too many failed sign-ins" in throttled.text


def test_the_console_can_be_switched_off(deployment: Deployment) -> None:
    with serving(deployment, console="off") as url:
        browser = Browserless(url)
        assert browser.http.get("/console/signin").status_code == 404
        assert browser.http.get("/healthz").status_code == 200


def test_multi_region_keys_are_listed_in_every_region_next_to_each_other(
    deployment: Deployment,
) -> None:
    kms = deployment.kms()
    key_id = kms.create_key(MultiRegion=True, Description="mrk")["KeyMetadata"]["KeyId"]
    kms.replicate_key(KeyId=key_id, ReplicaRegion="eu-west-1")
    browser = signed_in(deployment)
    rows = list(csv.DictReader(io.StringIO(browser.http.get("/console/keys.csv").text)))
    regions = [(n, row["Region"]) for n, row in enumerate(rows) if row["Key ID"] == key_id]
    assert [region for _, region in regions] == ["us-east-1", "eu-west-1"]
    assert regions[1][0] == regions[0][0] + 1  # grouped
    assert rows[regions[1][0]]["Multi-Region"].startswith("REPLICA (primary in us-east-1)")
    replica = browser.http.get(f"/console/keys/{key_id}?region=eu-west-1")
    assert replica.status_code == 200 and "arn:aws:kms:eu-west-1:" in replica.text
    assert browser.http.get(f"/console/keys/{key_id}?region=xx-nowhere-9").status_code == 400


def test_the_security_page_shows_the_domain_its_quorum_and_the_last_backup(
    deployment: Deployment, tmp_path: Path
) -> None:
    browser = signed_in(deployment)
    before = browser.http.get("/console/security").text
    assert "none recorded" in before
    made = deployment.cli.ok("domain", "create", "--custodians", "3", "--threshold", "2",
                             "--out-dir", str(tmp_path / "shares"))  # fmt: skip
    deployment.cli.ok("backup", "create", str(tmp_path / "backup.json"), "--allow-partial")
    page = browser.http.get("/console/security").text
    assert made["domain"] in page and "2 of 3 needed" in page
    assert "backup.json" in page and "0 days ago" in page
    for share in made["share_files"]:  # never a custodian's share
        assert Path(share).read_text().strip() not in page
    reader = signed_in(deployment, "reader")
    assert made["domain"] not in reader.http.get("/console/security").text
