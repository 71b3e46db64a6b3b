"""What every exported artifact carries, and how an engine reads it back.

An artifact (``.onnx``, ``.ts``, ``.pt2``) embeds one JSON document, the
*envelope*, under the key ``alexnet_kit`` (ONNX ``metadata_props``,
TorchScript ``_extra_files``, torch.export ``extra_files``)::

    {"artifact": 1, "meta": "<ModelMeta JSON>", "meta_sha256": "...",
     "fingerprint": "...", "source_fingerprint": "...", "precision": "fp32",
     "outputs": ["logits", "features"], "exported_with": {...}}

``fingerprint`` identifies the *function computed*: an exact fp32 export
keeps its checkpoint's weights fingerprint (its features are the same, so a
search index built from either serves both); an int8 artifact gets its own
(``<weights>-int8-<mode>``) because its features differ.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field

from ..errors import CheckpointError
from ..meta import ModelMeta

KEY = "alexnet_kit"
ENVELOPE_VERSION = 1
OUTPUTS = ("logits", "features")
INPUT = "input"


@dataclass
class Envelope:
    meta: ModelMeta
    fingerprint: str
    source_fingerprint: str
    precision: str = "fp32"
    exported_with: dict = field(default_factory=dict)

    def to_json(self) -> str:
        meta_json = self.meta.to_json()
        return json.dumps(
            {
                "artifact": ENVELOPE_VERSION,
                "meta": meta_json,
                "meta_sha256": hashlib.sha256(meta_json.encode()).hexdigest(),
                "fingerprint": self.fingerprint,
                "source_fingerprint": self.source_fingerprint,
                "precision": self.precision,
                "outputs": list(OUTPUTS),
                "exported_with": self.exported_with,
            },
            sort_keys=True,
        )

    @classmethod
    def parse(cls, path: str | os.PathLike, text: str | bytes | None, kind: str) -> "Envelope":
        """Read the envelope of ``path`` (a ``kind`` file); one-line CheckpointError when foreign."""
        if not text:
            raise CheckpointError(path, f"a {kind}, but not an alexnet-kit artifact (no {KEY} metadata)")
        try:
            d = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise CheckpointError(path, f"{KEY} metadata is not valid JSON") from None
        if not isinstance(d, dict) or not isinstance(d.get("artifact"), int):
            raise CheckpointError(path, f"{KEY} metadata is malformed")
        if d["artifact"] > ENVELOPE_VERSION:
            raise CheckpointError(path, f"written by a newer alexnet-kit (artifact version {d['artifact']}); upgrade alexnet-kit")
        meta = ModelMeta.from_signed_json(path, d.get("meta"), d.get("meta_sha256"))
        if tuple(d.get("outputs") or ()) != OUTPUTS or not d.get("fingerprint"):
            raise CheckpointError(path, f"{KEY} metadata lacks outputs/fingerprint")
        return cls(meta, d["fingerprint"], d.get("source_fingerprint", ""), d.get("precision", "fp32"), d.get("exported_with") or {})
