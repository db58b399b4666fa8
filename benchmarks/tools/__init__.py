"""Tooling CI and the GPU suite depend on: the compile-as-launched kernel report (kernel_capture → kernel_compile →
kernel_report) and derive_preferences (benchmark JSON → the ``auto`` backend's preferences.json)."""
