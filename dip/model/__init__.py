"""The DiP network (docs/model.md §2–§5): the backbone and its layers, the Patch Detailer Head, the presets with
their recipes, the released checkpoint layout, the Hub conventions, loading from checkpoints. The only layer that
imports dip_kernels."""
from .dip import DiP
from .presets import PRESETS, Preset, Recipe, create_model, get_preset, recipe

__all__ = ["DiP", "PRESETS", "Preset", "Recipe", "create_model", "get_preset", "recipe"]
