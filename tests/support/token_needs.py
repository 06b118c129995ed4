"""Declarative token requirements: a test says what it needs, the session's token answers.

    @pytest.mark.needs_mechanism("AES_KEY_WRAP_PAD")       # CKM_ names, without CKM_
    @pytest.mark.needs_curve("secp256k1")                   # a name from CURVES, or an OID
    @pytest.mark.needs_key_spec("ECC_NIST_EDWARDS25519", "SIGN_VERIFY")
    @pytest.mark.needs_token("softhsm", reason="reaches into SoftHSM2's token directory")

A test whose token lacks what it names is skipped with a reason naming the token and what
it lacks. The question goes through hsmkms's token layer (`Hsm.mechanisms`, `Hsm.require`,
which CreateKey asks too), so a test skips exactly where hsmkms itself would refuse.
`needs_token` is for tests that reach into one implementation itself (its files, its
utilities): HSMKMS_TEST_TOKEN names the session's token kind (`softhsm`, `nss`).
Loaded by tests/conftest.py through `pytest_plugins`.
"""

from __future__ import annotations

import os

import pytest
from pkcs11 import Mechanism

from hsmkms.errors import UnsupportedOperationException
from hsmkms.keys.specs import material_for
from hsmkms.store.model import KeySpec, KeyUsage
from hsmkms.token import Hsm
from hsmkms.token.kinds import EcPair

TOKEN_KINDS = ("softhsm", "nss")
CURVES = {
    "P-256": "1.2.840.10045.3.1.7",
    "P-384": "1.3.132.0.34",
    "P-521": "1.3.132.0.35",
    "secp256k1": "1.3.132.0.10",
}
MARKERS = {
    "needs_mechanism": "needs_mechanism(*names): skip unless the token offers each CKM_<name>",
    "needs_curve": "needs_curve(name_or_oid): skip unless the token makes EC keys on the curve",
    "needs_key_spec": "needs_key_spec(spec, usage): skip unless the token can hold such a key",
    "needs_token": "needs_token(kind, reason=...): skip unless the session's token is that kind",
}


def token_kind() -> str:
    """The kind of the session's main token: `softhsm` (the default) or `nss`."""
    return os.environ.get("HSMKMS_TEST_TOKEN", "softhsm")


def pytest_configure(config: pytest.Config) -> None:
    for name, help_text in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {help_text}")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """needs_token is known before any token exists: decided at collection, and a kind
    nobody runs is a typo, not a skip."""
    for item in items:
        for mark in item.iter_markers("needs_token"):
            (kind,) = mark.args
            if kind not in TOKEN_KINDS:
                raise pytest.UsageError(f"{item.nodeid}: needs_token({kind!r}): no such kind")
            if token_kind() != kind:
                reason = mark.kwargs.get("reason", f"needs the {kind} token")
                item.add_marker(pytest.mark.skip(reason=f"{token_kind()} token: {reason}"))


@pytest.fixture(autouse=True)
def _token_needs(request: pytest.FixtureRequest) -> None:
    """Skips the test when the session's token lacks what its needs_* marks name. The
    token is only brought up for tests that carry such a mark."""
    lacking = [
        lack
        for name in ("needs_mechanism", "needs_curve", "needs_key_spec")
        for mark in request.node.iter_markers(name)
        if (lack := _lacks(request.getfixturevalue("hsm"), name, mark.args)) is not None
    ]
    if lacking:
        hsm: Hsm = request.getfixturevalue("hsm")
        pytest.skip(f"{hsm.token_label}: " + " ".join(lacking))


def _lacks(hsm: Hsm, name: str, args: tuple[object, ...]) -> str | None:
    """What the token lacks for one mark, in hsmkms's own words; None when it has it."""
    try:
        if name == "needs_mechanism":
            missing = [m for m in map(str, args) if Mechanism[m] not in hsm.mechanisms]
            if missing:
                return f"the token does not offer the mechanism(s) {', '.join(missing)}."
        elif name == "needs_curve":
            (curve,) = args
            hsm.require(EcPair(CURVES.get(str(curve), str(curve)), sign=True, derive=False))
        else:
            spec, usage = args
            hsm.require(material_for(KeySpec(spec), KeyUsage(usage)))
    except UnsupportedOperationException as exc:
        return str(exc)
    return None
