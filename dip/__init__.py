"""dip: DiP, pixel-space diffusion with a DiT on large patches and a Patch Detailer Head (docs/architecture.md)."""
from .model import PRESETS, DiP, Preset, Recipe, create_model, get_preset, recipe

__all__ = ["DiP", "PRESETS", "Preset", "Recipe", "create_model", "get_preset", "recipe"]
