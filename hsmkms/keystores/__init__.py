"""Custom key stores. AWS_CLOUDHSM: another PKCS#11 token holds the keys' material
(keystores/cloudhsm.py). EXTERNAL_KEY_STORE: hsmkms CALLING an XKS proxy, as AWS KMS
does (external_client.py, the double-encryption blob external_blob.py, the failure
mapping external_failures.py, stores external_stores.py, keys external_keys.py). The
store records both kinds share: records.py; the KMS operations: operations.py.
"""

# The external blob format registers with THE blob decoder (keys/blobs.py) at import:
# whatever uses a custom key store module (every OperationContext does) knows 0xA2.
from hsmkms.keystores import external_blob as _external_blob  # noqa: F401
