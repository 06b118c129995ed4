"""The needs_* markers (tests/support/token_needs.py) ask the session's real token, through
hsmkms's token layer, and name what it lacks."""

from __future__ import annotations

import pytest
from pkcs11 import Mechanism

from hsmkms.token import Hsm
from tests.conftest import ROOT
from tests.support.token_needs import _lacks, token_kind


@pytest.fixture
def plugin_project(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """A throwaway project whose pytest loads tests/support/token_needs.py."""
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    pytester.makeconftest('pytest_plugins = ["tests.support.token_needs"]')
    return pytester


def test_a_mechanism_the_token_offers_is_no_lack(hsm: Hsm) -> None:
    assert Mechanism.AES_GCM in hsm.mechanisms  # hsmkms's own encryption: every token
    assert _lacks(hsm, "needs_mechanism", ("AES_GCM", "AES_KEY_GEN")) is None


def test_a_mechanism_the_token_lacks_is_named(hsm: Hsm, monkeypatch: pytest.MonkeyPatch) -> None:
    available = hsm.mechanisms._available - {Mechanism.AES_KEY_WRAP_PAD}
    monkeypatch.setattr(hsm.mechanisms, "_available", available)
    lack = _lacks(hsm, "needs_mechanism", ("AES_GCM", "AES_KEY_WRAP_PAD"))
    assert lack == "the token does not offer the mechanism(s) AES_KEY_WRAP_PAD."


def test_a_curve_is_asked_by_probing_the_token(hsm: Hsm) -> None:
    assert _lacks(hsm, "needs_curve", ("P-256",)) is None
    lack = _lacks(hsm, "needs_curve", ("1.3.6.1.4.1.99999.1",))  # no token knows this curve
    assert lack is not None and "1.3.6.1.4.1.99999.1" in lack


def test_a_key_spec_is_asked_as_create_key_asks(hsm: Hsm, monkeypatch: pytest.MonkeyPatch) -> None:
    assert _lacks(hsm, "needs_key_spec", ("RSA_2048", "ENCRYPT_DECRYPT")) is None
    available = hsm.mechanisms._available - {Mechanism.RSA_PKCS_OAEP}
    monkeypatch.setattr(hsm.mechanisms, "_available", available)
    lack = _lacks(hsm, "needs_key_spec", ("RSA_2048", "ENCRYPT_DECRYPT"))
    assert lack is not None and "RSA_PKCS_OAEP" in lack


@pytest.mark.needs_mechanism("AES_GCM")
def test_a_test_whose_needs_are_met_runs() -> None:
    assert True  # reached: not skipped


def test_needs_token_skips_other_kinds_with_the_reason(plugin_project: pytest.Pytester) -> None:
    other = "nss" if token_kind() == "softhsm" else "softhsm"
    plugin_project.makepyfile(
        f"""
        import pytest

        @pytest.mark.needs_token("{other}", reason="reaches into its files")
        def test_other_kind():
            raise AssertionError("must not run")

        @pytest.mark.needs_token("{token_kind()}")
        def test_this_kind():
            pass
        """
    )
    result = plugin_project.runpytest_subprocess("-p", "no:xdist", "-rs")
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines([f"*{token_kind()} token: reaches into its files*"])


def test_needs_token_refuses_an_unknown_kind(plugin_project: pytest.Pytester) -> None:
    plugin_project.makepyfile(
        """
        import pytest

        @pytest.mark.needs_token("softhsm2")
        def test_typo():
            pass
        """
    )
    result = plugin_project.runpytest_subprocess("-p", "no:xdist")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*needs_token('softhsm2'): no such kind*"])
