"""The console in a real headless Chromium (Debian's, driven by Playwright's Python API),
against a real `hsmkms serve` on a real token. Run by `make test-console`, not by
`make test` (the `console` marker is deselected by default, pyproject.toml).

Screenshots of each page go to HSMKMS_TEST_SCREENSHOTS when set (`make screenshots` sets it to
docs/screenshots/, a few are in the README), else to a temporary directory, so a test run
leaves the checkout as it was.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.console.console_support import Deployment, make_deployment, serving
from tests.support.parallel import serial

pytestmark = [
    pytest.mark.console,
    serial,  # a browser takes both cores while it renders: never two at once
    pytest.mark.needs_token(
        "softhsm", reason="the console is served by `hsmkms serve` over its own SoftHSM2 token"
    ),
]

CHROMIUM = os.environ.get("HSMKMS_TEST_CHROMIUM", "/usr/bin/chromium")
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update",
         "--disable-sync"]  # fmt: skip
DESKTOP = {"width": 1280, "height": 800}
NARROW = {"width": 390, "height": 844}


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    made = make_deployment(tmp_path_factory.mktemp("browser"))
    with serving(made, console_idle_seconds="4") as url:
        made.url = url
        yield made


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if shutil.which(CHROMIUM) is None:
        pytest.fail(f"{CHROMIUM} not found: `make test-console` installs chromium")
    playwright = pytest.importorskip("playwright.sync_api")
    with playwright.sync_playwright() as driver:
        launched = driver.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport=DESKTOP)  # a fresh profile: no cookies
    opened = context.new_page()
    refused: list[str] = []
    opened.on("console", lambda m: refused.append(m.text) if "Content Security" in m.text else None)
    yield opened
    context.close()
    assert refused == []  # nothing on any page needed more than the policy allows


def sign_in(page: Any, deployment: Deployment, name: str = "custodian") -> None:
    page.goto(deployment.url + "/console/")
    access_key_id, secret = deployment.keys[name]
    page.get_by_label("Access key ID").fill(access_key_id)
    page.get_by_label("Secret access key").fill(secret)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/console/keys")


@functools.cache
def screenshot_folder() -> Path:
    chosen = os.environ.get("HSMKMS_TEST_SCREENSHOTS")
    folder = Path(chosen) if chosen else Path(tempfile.mkdtemp(prefix="hsmkms-screenshots-"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def shoot(page: Any, name: str) -> None:
    page.screenshot(path=str(screenshot_folder() / f"{name}.png"), full_page=True)


def test_sign_in_and_the_inventory_lists_keys_made_through_boto3(
    page: Any, deployment: Deployment
) -> None:
    kms = deployment.kms()
    made = kms.create_key(Description="card payments")["KeyMetadata"]["KeyId"]
    kms.create_alias(AliasName="alias/payments", TargetKeyId=made)
    kms.enable_key_rotation(KeyId=made, RotationPeriodInDays=90)
    signing = kms.create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY",
                             Description="release signing")["KeyMetadata"]["KeyId"]  # fmt: skip
    page.goto(deployment.url + "/console/signin")
    shoot(page, "signin")
    sign_in(page, deployment)
    rows = page.locator("table.keys tbody tr")
    text = rows.all_inner_texts()
    assert any("alias/payments" in row and "every 90 days" in row for row in text)
    assert any("ECC_NIST_P256" in row and "SIGN_VERIFY" in row for row in text)
    assert page.locator(f'a[href*="/console/keys/{signing}"]').count() == 1
    shoot(page, "inventory")
    page.get_by_label("Filter").fill("payments")
    page.get_by_role("button", name="Apply").click()
    assert page.locator("table.keys tbody tr").count() == 1
    page.set_viewport_size(NARROW)
    shoot(page, "inventory-narrow")
    assert page.evaluate("document.documentElement.scrollWidth") <= NARROW["width"] + 1 or (
        page.evaluate("document.querySelector('.table-wrap').scrollWidth")
        > page.evaluate("document.querySelector('.table-wrap').clientWidth")
    )  # the page fits; a wide table scrolls inside its own box


def test_a_keys_page_shows_its_usage_chart_after_encrypt_calls(
    page: Any, deployment: Deployment
) -> None:
    kms = deployment.kms()
    key_id = kms.create_key(Description="usage")["KeyMetadata"]["KeyId"]
    for _ in range(6):
        kms.encrypt(KeyId=key_id, Plaintext=b"usage")
    with pytest.raises(ClientError):
        deployment.kms("reader").decrypt(CiphertextBlob=b"\xa1" + b"\0" * 60, KeyId=key_id)
    sign_in(page, deployment)
    page.goto(f"{deployment.url}/console/keys/{key_id}")
    chart = page.locator("#usage-chart")
    assert chart.is_visible()
    labels = chart.locator("rect.bar title").all_text_contents()
    assert any(label.endswith("Encrypt x 6") for label in labels), labels
    assert "Encrypt" in page.locator(".legend").inner_text()
    principals = page.locator("#usage-principals").inner_text()
    assert deployment.arn("custodian") in principals
    assert "InvalidCiphertextException" in page.locator("#usage-failures").inner_text()
    shoot(page, "key")


def test_disabling_a_key_in_the_console_fails_boto3_encrypt_and_is_audited(
    page: Any, deployment: Deployment
) -> None:
    kms = deployment.kms()
    key_id = kms.create_key(Description="to disable")["KeyMetadata"]["KeyId"]
    sign_in(page, deployment)
    page.goto(f"{deployment.url}/console/keys/{key_id}")
    page.get_by_role("button", name="Disable key").click()
    page.wait_for_url(f"**/console/keys/{key_id}?*done=DisableKey")
    assert "Disabled" in page.locator(".facts").first.inner_text()
    with pytest.raises(ClientError) as failed:
        kms.encrypt(KeyId=key_id, Plaintext=b"x")
    assert failed.value.response["Error"]["Code"] == "DisabledException"
    records = [r for r in deployment.audit_records() if r["eventName"] == "DisableKey"
               and key_id in json.dumps(r.get("resources"))]  # fmt: skip
    assert records[-1]["userIdentity"]["arn"] == deployment.arn("custodian")
    assert records[-1]["userAgent"] == "hsmkms-console"
    page.get_by_role("link", name="Schedule deletion…").click()
    shoot(page, "schedule-deletion")
    assert page.get_by_role("button", name="Schedule deletion").is_disabled()
    page.get_by_label("Type the key ID to confirm").fill(key_id)
    page.get_by_role("button", name="Schedule deletion").click()
    page.wait_for_url("**done=ScheduleKeyDeletion")
    assert kms.describe_key(KeyId=key_id)["KeyMetadata"]["KeyState"] == "PendingDeletion"


def test_a_principal_without_permission_sees_access_denied(
    page: Any, deployment: Deployment
) -> None:
    key_id = deployment.kms().create_key(Description="secret plans")["KeyMetadata"]["KeyId"]
    sign_in(page, deployment, "nobody")
    assert page.get_by_role("heading", name="Access denied").is_visible()
    page.goto(f"{deployment.url}/console/keys/{key_id}")
    assert page.get_by_role("heading", name="Access denied").is_visible()
    assert "secret plans" not in page.content()
    shoot(page, "access-denied")


def test_a_forged_form_post_without_csrf_token_is_refused(
    page: Any, deployment: Deployment
) -> None:
    key_id = deployment.kms().create_key()["KeyMetadata"]["KeyId"]
    sign_in(page, deployment)
    page.goto(f"{deployment.url}/console/keys/{key_id}")
    page.evaluate("document.querySelectorAll('input[name=csrf]').forEach(i => i.remove())")
    page.get_by_role("button", name="Disable key").click()
    assert page.get_by_role("heading", name="Access denied").is_visible()
    assert "CSRF" in page.locator(".error").inner_text()
    assert deployment.kms().describe_key(KeyId=key_id)["KeyMetadata"]["KeyState"] == "Enabled"


def test_an_idle_session_returns_to_sign_in(page: Any, deployment: Deployment) -> None:
    sign_in(page, deployment)
    page.wait_for_timeout(4500)  # the server's idle limit is 4 s
    page.reload()
    assert page.url.endswith("/console/signin?reason=expired")
    assert "session has ended" in page.locator(".notice").inner_text()


def test_audit_search_verification_and_security_pages(page: Any, deployment: Deployment) -> None:
    sign_in(page, deployment)
    page.get_by_role("link", name="Audit trail").click()
    page.get_by_role("button", name="Verify the trail now").click()
    verdict = page.locator("#verdict")
    assert verdict.inner_text().startswith("Valid")
    assert page.locator("#chains tbody tr").count() >= 1
    page.get_by_label("Event").fill("ConsoleLogin")
    page.get_by_role("button", name="Search").click()
    assert page.locator("#records tbody tr").count() >= 1
    assert set(page.locator("#records tbody tr td:nth-child(2)").all_inner_texts()) == {
        "ConsoleLogin"
    }
    shoot(page, "audit")
    page.get_by_role("link", name="Domain & key stores").click()
    assert "none" in page.locator("#domain").inner_text()  # no security domain yet
    shoot(page, "security")


def test_keyboard_reaches_the_content_and_the_forms(page: Any, deployment: Deployment) -> None:
    page.goto(deployment.url + "/console/signin")
    access_key_id, secret = deployment.keys["custodian"]
    # The access key id field has the focus (autofocus), which a browser may set a moment
    # after the load event: keys typed before it went nowhere in one CI run.
    page.wait_for_function("document.activeElement?.id === 'access_key_id'", timeout=10_000)
    page.keyboard.type(access_key_id)
    page.keyboard.press("Tab")
    page.keyboard.type(secret)
    page.keyboard.press("Enter")
    page.wait_for_url("**/console/keys")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.id") == "main"
    for field in page.locator("main input:not([type=hidden]), main select").all():
        field_id = field.get_attribute("id")
        assert field_id and page.locator(f'label[for="{field_id}"]').count() == 1
