"""Op C, the final context: ``reference`` (ground truth), ``op`` (custom ops, checks, registration), ``triton`` and
``cuda`` (launchers). See docs/architecture.md."""
from . import op  # noqa: F401  (registers the kernel backends that can run here)
from .reference import final_context  # noqa: F401
