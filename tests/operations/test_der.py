"""The hand-made ECDSA DER encoding agrees with cryptography's for every shape of r, s."""

from __future__ import annotations

import os

from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from hypothesis import given
from hypothesis import strategies as st

from hsmkms.operations.asymmetric import _ecdsa_der


@given(st.sampled_from([32, 48, 66]), st.data())
def test_matches_cryptography(width: int, data: st.DataObject) -> None:
    r = data.draw(st.integers(1, 2 ** (8 * width) - 1))
    s = data.draw(st.integers(1, 2 ** (8 * width) - 1))
    raw = r.to_bytes(width, "big") + s.to_bytes(width, "big")
    assert _ecdsa_der(raw) == encode_dss_signature(r, s)


def test_leading_zero_and_high_bit_edges() -> None:
    for r, s in ((1, 2), (2**255, 2**255 - 1), (int.from_bytes(os.urandom(66), "big") >> 7, 5)):
        width = 66 if r.bit_length() > 256 else 32
        assert _ecdsa_der(
            r.to_bytes(width, "big") + s.to_bytes(width, "big")
        ) == encode_dss_signature(r, s)
