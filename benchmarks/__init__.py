"""Timing scripts (``python benchmarks/bench_*.py``), the tooling CI and the GPU suite depend on (``tools/``) and
experiments (``experiments/``); importable as the ``benchmarks`` package once dip is installed (``pip install -e .``)
or from the repository root with ``python -m benchmarks.<module>``."""
