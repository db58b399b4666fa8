"""Measuring the CPU demo: does the model draw the digit it was asked for?

A logistic-regression classifier fitted on scikit-learn's real 8×8 digits labels the generated 32×32 samples
(brought back to 8×8 grey on the digits' 0..16 scale); the score is the share assigned to the requested class.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def digits_classifier():
    """Logistic regression on all 1,797 real digits (8×8, values 0..16)."""
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression

    digits = load_digits()
    return LogisticRegression(max_iter=5000).fit(digits.data, digits.target)


def to_digit_features(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] (N, 3, H, W) samples → (N, 64) features on the digits' scale: grey, area-resized to 8×8, 0..16."""
    grey = ((images.float().clamp(-1, 1) + 1) / 2).mean(1, keepdim=True)
    return (F.adaptive_avg_pool2d(grey, 8) * 16).flatten(1).cpu()


def digits_accuracy(images: torch.Tensor, labels: torch.Tensor) -> float:
    """Share of class-conditional samples the classifier assigns to the class they were generated for."""
    predicted = digits_classifier().predict(to_digit_features(images).numpy())
    return float((torch.from_numpy(predicted) == labels.cpu()).float().mean())
