"""Op B, QK-norm + 2D RoPE: ``reference`` (ground truth and the RoPE table), ``op`` (custom ops, checks,
registration), ``triton`` and ``cuda`` (launchers). See docs/architecture.md."""
from . import op  # noqa: F401  (registers the kernel backends that can run here)
from .reference import qk_norm_rope, rope_2d_table  # noqa: F401
