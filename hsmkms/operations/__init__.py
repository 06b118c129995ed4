"""KMS operations, one module per area, and the operation table (table.py)."""
