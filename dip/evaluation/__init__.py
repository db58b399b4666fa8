"""Measuring samples (docs/model.md §9): Inception features and statistics, FID/sFID/IS/precision/recall, the patch
diagnostics (seam score, spectra), the training-time monitor and the digits demo's classifier check."""
