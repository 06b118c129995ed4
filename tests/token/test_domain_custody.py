"""The security domain key against a holder of the user PIN (who has `user.pin`, not the
SO PIN). The attacks run with python-pkcs11 directly on real tokens: the domain key made
by `create_domain` and `join_domain` (SoftHSM2), and what the session's token (SoftHSM2,
or NSS softokn under HSMKMS_TEST_TOKEN=nss) enforces at all, measured with throwaway
session objects and compared with what hsmkms finds and refuses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.keywrap import aes_key_wrap
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
from pkcs11.exceptions import PKCS11Error

from hsmkms.token import Hsm
from hsmkms.token.arrays import ArrayAttributes
from hsmkms.token.domain import DOMAIN_LABEL, create_domain, join_domain
from hsmkms.token.enforcement import unenforced_protections
from hsmkms.token.library import find_token, load_module
from tests.cli.test_cli import Cli
from tests.conftest import PeerToken, TokenEnv, nss_token_env

KW = Mechanism.AES_KEY_WRAP  # RFC 3394: the same mechanism number on every token
CUSTODY = {
    Attribute.SENSITIVE: True,
    Attribute.EXTRACTABLE: True,
    Attribute.WRAP_WITH_TRUSTED: True,
}
READABLE = {Attribute.SENSITIVE: False, Attribute.EXTRACTABLE: True}


def session_key(session: Any, **attributes: bool) -> Any:
    template = {Attribute.TOKEN: False, **{Attribute[k.upper()]: v for k, v in attributes.items()}}
    return session.generate_key(KeyType.AES, 256, store=False, template=template)


def unwrapped_value(kek: Any, blob: bytes, template: dict[Any, Any]) -> bytes | None:
    """The plaintext value of `blob` unwrapped under kek with `template`, or None when
    the token refuses the unwrap or keeps the result sensitive."""
    try:
        copy = kek.unwrap_key(
            ObjectClass.SECRET_KEY, KeyType.AES, blob, mechanism=KW, store=False,
            template={Attribute.TOKEN: False, **template},
        )  # fmt: skip
    except PKCS11Error:
        return None
    try:
        return bytes(copy[Attribute.VALUE])
    except PKCS11Error:
        return None
    finally:
        copy.destroy()


def refuses(action: Any) -> bool:
    try:
        action()
    except PKCS11Error:
        return True
    return False


def set_decrypt(key: Any) -> None:
    key[Attribute.DECRYPT] = True


def copy_with_decrypt(key: Any) -> None:
    copy = key.copy({Attribute.TOKEN: False, Attribute.DECRYPT: True})
    decrypts = copy[Attribute.DECRYPT]
    copy.destroy()
    if not decrypts:
        raise PKCS11Error("the token made the copy without CKA_DECRYPT")


# -- the domain key hsmkms installs (SoftHSM2 peers f and g) ------------------------------


def test_the_domain_key_gives_a_user_pin_holder_no_plaintext(
    peer_tokens: dict[str, PeerToken],
) -> None:
    made, joining = peer_tokens["peer-f"], peer_tokens["peer-g"]
    domain = create_domain(made.module, made.label, made.so_pin, made.pin, 2, 2)
    join_domain(joining.module, joining.label, joining.so_pin, joining.pin, domain.shares)
    for peer in (made, joining):
        token = find_token(load_module(peer.module), peer.label)
        with token.open(rw=True, user_pin=peer.pin) as session:
            key = session.get_key(object_class=ObjectClass.SECRET_KEY, label=DOMAIN_LABEL)
            assert key[Attribute.TRUSTED] and not key[Attribute.MODIFIABLE], peer.label
            assert refuses(lambda k=key: set_decrypt(k)), peer.label  # no C_Decrypt of blobs
            assert refuses(lambda k=key: copy_with_decrypt(k)), peer.label  # nor on a copy
            target = session_key(session, **{a.name.lower(): v for a, v in CUSTODY.items()})
            blob = bytes(key.wrap_key(target, mechanism=KW))
            # The attack: unwrap a domain-custody key as readable. Refused by the template.
            for template in (READABLE, {Attribute.EXTRACTABLE: True}, {}):
                assert unwrapped_value(key, blob, template) is None, (peer.label, template)
            # Keys of the user's own making are not wrapped under the domain key.
            own = session_key(session, sensitive=False, extractable=True)
            assert refuses(lambda k=key, o=own: k.wrap_key(o, mechanism=KW)), peer.label
            # What hsmkms itself unwraps (restore, replication, seal) still unwraps.
            restored = key.unwrap_key(
                ObjectClass.SECRET_KEY, KeyType.AES, blob, mechanism=KW, store=False,
                template={Attribute.TOKEN: False, Attribute.ENCRYPT: True, **CUSTODY},
            )  # fmt: skip
            assert restored[Attribute.WRAP_WITH_TRUSTED] and restored[Attribute.SENSITIVE]


# -- what the session's token enforces at all -------------------------------------------


def measured_gaps(session: Any) -> set[str]:
    """The attack on keys a user can make, step by step: the protections it got past."""
    gaps: set[str] = set()
    value = os.urandom(32)
    kek = session.create_object({
        Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.KEY_TYPE: KeyType.AES,
        Attribute.VALUE: value, Attribute.TOKEN: False, Attribute.PRIVATE: True,
        Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: False, Attribute.MODIFIABLE: False,
        Attribute.WRAP: True, Attribute.UNWRAP: True, Attribute.ENCRYPT: False,
        Attribute.DECRYPT: False, Attribute.UNWRAP_TEMPLATE: CUSTODY,
        Attribute.WRAP_TEMPLATE: CUSTODY,
    })  # fmt: skip
    if not refuses(lambda: set_decrypt(kek)) or not refuses(lambda: copy_with_decrypt(kek)):
        gaps.add("CKA_MODIFIABLE")
    secret = os.urandom(32)
    blob = aes_key_wrap(value, secret)  # kek's value is ours: wrap in software
    if unwrapped_value(kek, blob, READABLE) == secret:
        gaps.add("CKA_UNWRAP_TEMPLATE")
    plain = session_key(session, wrap=True)
    own = session_key(session, sensitive=False, extractable=True)
    assert not refuses(lambda: plain.wrap_key(own, mechanism=KW))  # the control
    if not refuses(lambda: kek.wrap_key(own, mechanism=KW)):
        gaps.add("CKA_WRAP_TEMPLATE")
    custody = session_key(session, sensitive=True, extractable=True, wrap_with_trusted=True)
    if not refuses(lambda: plain.wrap_key(custody, mechanism=KW)):
        gaps.add("CKA_WRAP_WITH_TRUSTED")  # any user key takes domain material out
    if not refuses(lambda: session_key(session, wrap=True, trusted=True)):
        gaps.add("CKA_TRUSTED")  # a user can make the "trusted" key
    return gaps


# Measured with the tokens the suite runs on (see README "Token compatibility").
EXPECTED = {
    "softhsm": set(),
    "nss": {
        "CKA_MODIFIABLE",
        "CKA_UNWRAP_TEMPLATE",
        "CKA_WRAP_TEMPLATE",
        "CKA_WRAP_WITH_TRUSTED",
        "CKA_TRUSTED",
    },
}


def test_what_the_token_enforces_is_measured_and_hsmkms_finds_the_same(
    hsm: Hsm, token_env: TokenEnv
) -> None:
    token = find_token(load_module(token_env.module, token_env.init_params), token_env.label)
    # `hsm` holds the user login for this process: this session shares it.
    with token.open(rw=True, attribute_mapper=ArrayAttributes()) as session:
        gaps = measured_gaps(session)
        found = unenforced_protections(session)
    assert gaps == EXPECTED[os.environ.get("HSMKMS_TEST_TOKEN", "softhsm")]
    assert set(found) == gaps


# -- the CLI on a token that does not enforce them (a fresh NSS softokn database) --------


def test_domain_create_is_refused_where_the_token_does_not_enforce_it(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    nss = nss_token_env(tmp_path_factory)
    cli = Cli(tmp_path / "data")
    so_pin = tmp_path / "so.pin"
    so_pin.write_text("NSS softokn has no SO once its database has a password\n")
    cli.env.update({
        "HSMKMS_PKCS11_LIB": nss.module, "HSMKMS_PKCS11_INIT_ARGS": nss.init_params or "",
        "HSMKMS_TOKEN_LABEL": nss.label, "HSMKMS_PIN": nss.pin,
        "HSMKMS_SO_PIN_FILE": str(so_pin),
    })  # fmt: skip
    cli.ok("init")
    create = ("domain", "create", "--custodians", "2", "--threshold", "2")
    refused = cli.fails(*create)
    for gap in EXPECTED["nss"]:
        assert gap in refused
    assert "--accept-unenforced-templates" in refused and "UnsupportedOperation" in refused
    # Accepted: the command goes on, and stops where NSS has no security officer.
    assert "security officer" in cli.fails(*create, "--accept-unenforced-templates")
    assert cli.ok("domain", "status")["domain"] is None
    lines = cli.run("audit", "query", "--event", "CreateSecurityDomain").stdout.splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["requestParameters"]["AcceptUnenforcedTemplates"] for r in records] == [False, True]
    assert all(r["errorCode"] for r in records)


# -- a domain key installed by an older release ---------------------------------------

# How releases before this one installed the domain key: modifiable, without templates.
_OLD_INSTALL = """
import os, sys
from pkcs11 import Attribute, KeyType, ObjectClass
from hsmkms.config import load_settings
from hsmkms.token.domain import DOMAIN_LABEL
from hsmkms.token.library import find_token, load_module
settings = load_settings()
os.environ["SOFTHSM2_CONF"] = str(settings.softhsm_conf.resolve())
token = find_token(load_module(settings.token.pkcs11_lib), settings.token.label)
holder = token.open(rw=True)
with token.open(rw=True, so_pin=(settings.data_dir / "so.pin").read_text().strip()):
    holder.create_object({
        Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.KEY_TYPE: KeyType.AES,
        Attribute.VALUE: os.urandom(32), Attribute.TOKEN: False, Attribute.PRIVATE: False,
        Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: False, Attribute.TRUSTED: True,
        Attribute.WRAP: True, Attribute.UNWRAP: True, Attribute.LABEL: "old-staging",
    })
with token.open(rw=True, user_pin=settings.read_pin()) as user:
    (staged,) = list(user.get_objects({Attribute.LABEL: "old-staging"}))
    staged.copy({Attribute.TOKEN: True, Attribute.PRIVATE: True, Attribute.LABEL: DOMAIN_LABEL,
                 Attribute.ID: os.urandom(32)})
    staged.destroy()
holder.close()
"""


@pytest.mark.skipif(
    os.environ.get("HSMKMS_TEST_TOKEN", "softhsm") != "softhsm",
    reason="the CLI creates and uses its own SoftHSM2 token (hsmkms init)",
)
def test_a_domain_key_from_an_older_release_is_reported(tmp_path: Path) -> None:
    cli = Cli(tmp_path / "data")
    cli.ok("init", "--keep-so-pin")
    assert cli.ok("domain", "status")["domain_key_modifiable"] is None  # no domain
    subprocess.run(
        [sys.executable, "-c", _OLD_INSTALL], env=cli.env, cwd=cli.cwd, check=True, timeout=60
    )
    status = cli.run("domain", "status")
    assert json.loads(status.stdout)["domain_key_modifiable"] is True
    assert "modifiable and has no unwrap template" in status.stderr
    assert "modifiable and has no unwrap template" in cli.run("maintain").stderr
