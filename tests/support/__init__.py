"""Helpers shared by the tests: the parity rule (parity.py), the op cases every kernel-wide test draws from
(op_cases.py), small models and inputs (models.py), which backends can run where (backends.py) and flows with known
answers (flows.py)."""
