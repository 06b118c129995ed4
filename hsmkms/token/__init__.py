"""The only package that imports pkcs11."""

from hsmkms.token.hsm import Hsm, ObjectFacts
from hsmkms.token.templates import MaterialRef

__all__ = ["Hsm", "MaterialRef", "ObjectFacts"]
