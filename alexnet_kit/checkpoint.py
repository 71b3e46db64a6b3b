"""The checkpoint file: safetensors weights + :class:`ModelMeta`, no pickle.

Layout: one ``.safetensors`` file whose tensors are the grouped model's
``state_dict`` and whose header metadata holds

* ``alexnet_kit``: the :class:`ModelMeta` JSON (architecture, classes, mean
  image, provenance),
* ``weights_sha256``: a digest of every tensor (name, dtype, shape, bytes),
  which is also the model's fingerprint (indexes record it),
* ``meta_sha256``: a digest of the metadata JSON.

Loading never runs code (safetensors has no pickle) and checks both digests,
so a truncated, foreign or edited file is refused with a one-line reason.
Training state (optimizer, RNG) lives in a separate file of the trainer's.
"""
from __future__ import annotations

import hashlib
import os

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from .errors import CheckpointError, existing_file, first_line
from .fsutil import atomic_path
from .meta import ModelMeta
from .model import AlexNet


def weights_digest(state: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}\n".encode())
        h.update(t.view(torch.uint8).numpy().data if t.numel() else b"")
    return h.hexdigest()


def save_checkpoint(path: str | os.PathLike, model: AlexNet | dict[str, torch.Tensor], meta: ModelMeta) -> str:
    """Write atomically; returns the weights fingerprint."""
    state = model.state_dict() if isinstance(model, torch.nn.Module) else model
    state = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    with torch.device("meta"):
        expected = set(AlexNet(meta.config).state_dict())
    if set(state) != expected:
        raise ValueError(f"state dict does not match the architecture: {sorted(set(state) ^ expected)[:5]}")
    meta_json = meta.to_json()
    digest = weights_digest(state)
    header = {
        "alexnet_kit": meta_json,
        "weights_sha256": digest,
        "meta_sha256": hashlib.sha256(meta_json.encode()).hexdigest(),
    }
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata=header)
    return digest


def read_meta(path: str | os.PathLike) -> tuple[ModelMeta, dict[str, str]]:
    """Metadata only (fast: reads the header, not the weights)."""
    path = existing_file(path, CheckpointError, "a checkpoint")
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(path, f"not an alexnet-kit checkpoint, or truncated ({first_line(e)})") from None
    if "alexnet_kit" not in header:
        raise CheckpointError(path, "a safetensors file, but not an alexnet-kit checkpoint (no alexnet_kit metadata)")
    return ModelMeta.from_signed_json(path, header["alexnet_kit"], header.get("meta_sha256")), header


def load_checkpoint(path: str | os.PathLike, verify: bool = True) -> tuple[dict[str, torch.Tensor], ModelMeta]:
    """(state_dict, meta); ``verify`` re-hashes the weights (about 0.2 s for the paper's model)."""
    meta, header = read_meta(path)
    try:
        state = {}
        with safe_open(str(path), framework="pt") as f:
            for k in f.keys():
                state[k] = f.get_tensor(k)
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(path, f"truncated or corrupt weights ({first_line(e)})") from None
    if verify and weights_digest(state) != header.get("weights_sha256"):
        raise CheckpointError(path, "weights digest mismatch: the file is corrupt or was modified after it was written")
    return state, meta


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu", verify: bool = True) -> tuple[AlexNet, ModelMeta]:
    """An :class:`AlexNet` in eval mode with the checkpoint's weights."""
    state, meta = load_checkpoint(path, verify=verify)
    with torch.device("meta"):  # no allocation or init for weights about to be replaced
        model = AlexNet(meta.config)
    try:
        model.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as e:
        raise CheckpointError(path, f"weights do not fit the architecture in its metadata ({first_line(e)})") from None
    return model.to(device).eval(), meta


def weights_fingerprint(path: str | os.PathLike) -> str:
    """The model's identity, from the header (no weight loading)."""
    return read_meta(path)[1]["weights_sha256"]
