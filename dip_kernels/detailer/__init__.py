"""Op D, the Patch Detailer Head's stages: ``reference`` (ground truth), ``op`` (checks, registration),
``triton`` (stage custom ops over the ``conv_triton`` launchers) and ``cuda`` (the two ends' custom ops). See
docs/architecture.md."""
from . import op  # noqa: F401  (registers the kernel backends that can run here)
from .reference import (  # noqa: F401
                        detailer_bottleneck,
                        detailer_decoder,
                        detailer_decoder_output,
                        detailer_encoder,
                        detailer_output,
                        detailer_stem,
)
