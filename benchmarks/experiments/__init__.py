"""Experiments behind the results in docs/results.md: the demo ablation, Figure 3 (overfitting one image), the
one-step denoising profile and the digits sample-quality helper."""
