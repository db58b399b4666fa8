"""Process-level helpers (docs/architecture.md): distributed set-up, the run-folder lock, output-folder probes, CPU
load. Imports nothing else of dip."""
