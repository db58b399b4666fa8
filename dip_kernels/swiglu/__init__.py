"""Op F, the SwiGLU gate: ``reference`` (ground truth), ``op`` (custom ops, checks, registration), ``triton``
(launchers). See docs/architecture.md."""
from . import op  # noqa: F401  (registers the kernel backends that can run here)
from .reference import swiglu  # noqa: F401
