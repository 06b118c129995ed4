"""Attribute arrays (CKA_WRAP_TEMPLATE, CKA_UNWRAP_TEMPLATE) for python-pkcs11 0.10,
which has no packer for them.

A session opened with `token.open(..., attribute_mapper=ArrayAttributes())` packs a
dict given for one of them as a C array of CK_ATTRIBUTE. The array points at buffers
this mapper owns, so they live as long as the session that uses them. Reading an array
attribute back gives its raw bytes (pointers into the token's memory): check what a
key enforces by trying it, not by reading it.
"""

from __future__ import annotations

import ctypes
from typing import Any

from pkcs11 import Attribute
from pkcs11.attributes import AttributeMapper

ARRAY_ATTRIBUTES = (Attribute.WRAP_TEMPLATE, Attribute.UNWRAP_TEMPLATE)


class _CkAttribute(ctypes.Structure):
    """CK_ATTRIBUTE: type, pValue, ulValueLen (CK_ULONG is C's unsigned long)."""

    _fields_ = (
        ("type", ctypes.c_ulong),
        ("value", ctypes.c_void_p),
        ("length", ctypes.c_ulong),
    )


class ArrayAttributes(AttributeMapper):
    def __init__(self) -> None:
        super().__init__()
        self._alive: list[Any] = []  # buffers the packed arrays point into
        for attribute in ARRAY_ATTRIBUTES:
            self.register_handler(attribute, self._pack_array, bytes)

    def _pack_array(self, template: dict[Attribute, Any]) -> bytes:
        entries = (_CkAttribute * len(template))()
        for entry, (attribute, value) in zip(entries, template.items(), strict=True):
            if attribute in ARRAY_ATTRIBUTES:
                raise ValueError("attribute arrays do not nest here")
            packed = self.pack_attribute(attribute, value)
            buffer = ctypes.create_string_buffer(packed, len(packed))
            self._alive.append(buffer)
            entry.type = int(attribute)
            entry.value = ctypes.cast(buffer, ctypes.c_void_p).value
            entry.length = len(packed)
        self._alive.append(entries)
        return bytes(entries)
