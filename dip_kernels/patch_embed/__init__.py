"""Op E, patch embedding / patchify / unpatchify: ``reference`` (ground truth), ``op`` (custom ops, checks,
registration), ``triton`` and ``cuda`` (launchers). See docs/architecture.md."""
from . import op  # noqa: F401  (registers the kernel backends that can run here)
from .reference import patch_embed, patchify, unpatchify  # noqa: F401
