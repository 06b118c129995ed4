"""hsmkms AS an XKS proxy: the operations AWS KMS calls on an external key store
(xks/operations.py, dispatched through xks/table.py), the SigV4 credentials it signs
with (xks/credentials.py) and each key store's secondary-authorization policy
(xks/policy.py). Its HTTP face is hsmkms/api/xks_proxy.py; its CLI hsmkms/cli/xks_proxy.py.
"""
