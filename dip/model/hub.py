"""The Hugging Face Hub conventions for DiP (docs/model.md §5.1): ``model.save_pretrained(dir)`` writes config.json (the
architecture) and model.safetensors through huggingface_hub's ``PyTorchModelHubMixin``; ``DiP.from_pretrained(dir or
repo id)`` reads them back (a local folder needs no network). huggingface_hub is an optional extra, imported on first
use. ``python -m dip.convert`` turns the authors' or a dip.train checkpoint into such a folder.

Safetensors carries no checksum, so the file's metadata holds a SHA-256 of every tensor (name, dtype, shape, bytes),
verified on load; weights that do not fit the architecture of config.json (and the caller's overrides) are one
error naming config.json, and a local-looking path that does not exist is "not found" at once, with no network.
"""
from __future__ import annotations

import functools
import hashlib
import json
import types
from pathlib import Path

import torch

from ..runtime.folders import writable_folder

DIGEST_KEY = "dip_weights_sha256"
WEIGHTS, CONFIG = "model.safetensors", "config.json"


def weights_digest(tensors) -> str:
    """SHA-256 over (name, dtype, shape, bytes) of ``tensors`` — (name, tensor) pairs — in name order."""
    digest = hashlib.sha256()
    for name, tensor in sorted(tensors, key=lambda item: item[0]):
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def read_verified_weights(path: Path, device: str = "cpu") -> dict:
    """The tensors of a safetensors file, read once and checked against the digest written beside them; a
    ``ValueError`` names ``path`` when the file is unreadable or its tensors differ from the digest."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device=str(device)) as f:
            stored = (f.metadata() or {}).get(DIGEST_KEY)
            tensors = {name: f.get_tensor(name) for name in f.keys()}
    except Exception as err:  # zero bytes, truncated header or data
        raise ValueError(f"{path} is not a readable safetensors file ({type(err).__name__}: {err})") from None
    if stored is not None and weights_digest(tensors.items()) != stored:
        raise ValueError(f"{path}: the weights do not match the digest saved with them (the file is damaged)")
    return tensors


def looks_local(source) -> bool:
    """Whether ``source`` names a local folder rather than a Hub repo id ("owner/name"): absolute, ./ ../ ~, more than
    one separator, or an existing first component."""
    text = str(source)
    return (Path(text).is_absolute() or text.startswith((".", "~")) or text.count("/") > 1 or "\\" in text
            or Path(text.split("/")[0]).exists())


@functools.cache
def hub_class(model_class: type) -> type:
    """``model_class`` with huggingface_hub's mixin first in its bases, so the mixin's save/load methods win."""
    try:
        from huggingface_hub import PyTorchModelHubMixin
    except ImportError:
        raise ImportError("save_pretrained / from_pretrained use huggingface_hub: pip install -e '.[hub]'") from None

    def save_pretrained(self, directory, **kwargs):
        """The mixin's save with the architecture as config.json (not run-time choices such as ``kernels``)."""
        writable_folder(directory, "save_pretrained folder")
        return PyTorchModelHubMixin.save_pretrained(self, directory, config=self.architecture, **kwargs)

    def _save_pretrained(self, save_directory: Path) -> None:
        """model.safetensors with the weights' digest in its metadata."""
        from safetensors.torch import save_model

        metadata = {"format": "pt", DIGEST_KEY: weights_digest(self.state_dict().items())}
        save_model(self, str(Path(save_directory) / WEIGHTS), metadata=metadata)

    def _load_as_safetensor(cls, model, model_file: str, map_location: str, strict: bool):
        """Read and verify the file, then load it strictly; weights of another architecture name config.json."""
        tensors = read_verified_weights(Path(model_file), map_location)
        try:
            model.load_state_dict(tensors, strict=True)
        except RuntimeError as err:
            config = Path(model_file).with_name(CONFIG)
            first = next((line.strip() for line in str(err).splitlines()[1:] if line.strip()), str(err))
            raise ValueError(f"{model_file} does not fit the architecture of {config} and the given overrides "
                             f"({json.dumps(model.architecture)}): {first}") from None
        return model.eval()

    def body(namespace: dict) -> None:
        namespace.update(__module__=__name__, __doc__=f"{model_class.__name__} with huggingface_hub's mixin.",
                         save_pretrained=save_pretrained, _save_pretrained=_save_pretrained,
                         _load_as_safetensor=classmethod(_load_as_safetensor))

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
        (e.g. ``kernels="triton"``) or go to the mixin (``revision``, ``local_files_only``, ``map_location`` …). A local
        folder must hold config.json and model.safetensors."""
        if looks_local(source):
            folder = Path(source).expanduser()
            missing = [name for name in (CONFIG, WEIGHTS) if not (folder / name).is_file()]
            if not folder.is_dir() or missing:
                what = "not found" if not folder.exists() else f"has no {' or '.join(missing)}" if folder.is_dir() \
                    else "is not a folder"
                raise FileNotFoundError(f"{source} {what} (a save_pretrained folder holds {CONFIG} and {WEIGHTS})")
            source = str(folder)
        try:
            return hub_class(cls).from_pretrained(source, **kwargs)
        except TypeError as err:  # config.json names arguments the model does not take
            raise ValueError(f"{source}/{CONFIG} does not describe a {cls.__name__}: {err}") from None
