"""dip: DiP, pixel-space diffusion with a DiT on large patches and a Patch Detailer Head."""
from .model import DiP
from .presets import PRESETS, Preset, Recipe, create_model, get_preset, recipe

__all__ = ["DiP", "PRESETS", "Preset", "Recipe", "create_model", "get_preset", "recipe"]
