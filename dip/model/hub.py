"""The Hugging Face Hub conventions for DiP (docs/model.md §5.1): ``model.save_pretrained(dir)`` writes config.json (the
architecture) and model.safetensors through huggingface_hub's ``PyTorchModelHubMixin``; ``DiP.from_pretrained(dir or
repo id)`` reads them back (a local folder needs no network). huggingface_hub is an optional extra, imported on first
use. ``python -m dip.convert`` turns the authors' or a dip.train checkpoint into such a folder.
"""
from __future__ import annotations

import functools
import types

import torch


@functools.cache
def hub_class(model_class: type) -> type:
    """``model_class`` with huggingface_hub's mixin first in its bases, so the mixin's save/load methods win."""
    try:
        from huggingface_hub import PyTorchModelHubMixin
    except ImportError:
        raise ImportError("save_pretrained / from_pretrained use huggingface_hub: pip install -e '.[hub]'") from None
    def save_pretrained(self, directory, **kwargs):
        """The mixin's save with the architecture as config.json (not run-time choices such as ``kernels``)."""
        return PyTorchModelHubMixin.save_pretrained(self, directory, config=self.architecture, **kwargs)

    def body(namespace: dict) -> None:
        namespace.update(__module__=__name__, __doc__=f"{model_class.__name__} with huggingface_hub's mixin.",
                         save_pretrained=save_pretrained)

    return types.new_class(f"Hub{model_class.__name__}", (PyTorchModelHubMixin, model_class),
                           {"library_name": "dip", "tags": ["pixel-space-diffusion", "dip"]}, body)


class HubConventions:
    """``save_pretrained`` / ``from_pretrained`` for a module that lists its constructor arguments in
    ``self.architecture`` (a JSON-able dict)."""

    def save_pretrained(self, directory, **kwargs):
        """Write ``directory``/config.json and model.safetensors (kwargs: the mixin's, e.g. ``push_to_hub``)."""
        with torch.device("meta"):  # (a model loaded by from_pretrained already has the mixin's method)
            twin = hub_class(type(self))(**self.architecture)
        twin.load_state_dict(self.state_dict(), assign=True)  # the same tensors: nothing copied
        return twin.save_pretrained(directory, **kwargs)

    @classmethod
    def from_pretrained(cls, source, **kwargs):
        """A model from a folder or Hub repo id written by ``save_pretrained``; kwargs override constructor arguments
        (e.g. ``kernels="triton"``) or go to the mixin (``revision``, ``local_files_only``, ``map_location`` …)."""
        return hub_class(cls).from_pretrained(source, **kwargs)
