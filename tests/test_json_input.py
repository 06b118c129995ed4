"""The one parser of JSON from outside (hsmkms/json_input.py): every input it cannot
stand behind is a ValueError, which each caller answers as its client's error."""

from __future__ import annotations

import pytest

from hsmkms.json_input import parse_json


@pytest.mark.parametrize(
    "text",
    [
        b'{"KeyId": "alias/\\ud800"}',  # a lone high surrogate
        b'{"\\udc00": "x"}',  # a lone low surrogate, in a key
        b'{"a": ["\\ude00\\ud83d"]}',  # a pair in the wrong order
        '{"a": "\ud800"}',  # text already holding one
        b"[" * 5000,  # deeper than json's recursion limit
        '{"a": 1}'.encode("utf-16"),  # not UTF-8 (json.loads would guess it)
        b"\xff",
    ],
)
def test_refused(text: str | bytes) -> None:
    with pytest.raises(ValueError):
        parse_json(text)


def test_accepted() -> None:
    assert parse_json(b'{"a": "\\ud83d\\ude00", "b": "\\u00e9"}') == {"a": "😀", "b": "é"}
    assert parse_json('{"a": "é"}'.encode()) == {"a": "é"}
    assert parse_json(b"[" * 200 + b"]" * 200) is not None
