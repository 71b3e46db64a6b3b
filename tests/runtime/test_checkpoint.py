"""Checkpoints round-trip bitwise and refuse wrong, truncated or tampered files."""
import json
import struct

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from alexnet_kit.checkpoint import load_checkpoint, load_model, read_meta, save_checkpoint
from alexnet_kit.errors import CheckpointError
from alexnet_kit.meta import ModelMeta
from alexnet_kit.model import AlexNet
from alexnet_kit.preprocess import Preprocess

from helpers import make_checkpoint


def _header_len(path):
    return struct.unpack("<Q", path.read_bytes()[:8])[0]


def test_round_trip_is_bitwise_with_metadata(tmp_path, tiny_config):
    torch.manual_seed(3)
    model = AlexNet(tiny_config)
    mean = np.random.default_rng(0).uniform(0, 255, (3, 256, 256)).astype(np.float32)
    meta = ModelMeta(tiny_config, [f"c{i}" for i in range(10)], [f"n{i:08d}" for i in range(10)],
                     Preprocess(mean=mean), trained=True, provenance={"epochs": 3, "dataset": "x"})
    path = tmp_path / "m.safetensors"
    save_checkpoint(path, model, meta)
    state, meta2 = load_checkpoint(path)
    for k, v in model.state_dict().items():
        assert torch.equal(state[k], v) and state[k].dtype == v.dtype, k
    assert meta2.to_json() == meta.to_json()
    assert np.array_equal(meta2.preprocess.mean, mean)
    loaded, _ = load_model(path)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        assert torch.equal(loaded(x), model.eval()(x))


def test_paper_model_round_trip(paper_checkpoint):
    model, meta = load_model(paper_checkpoint)
    assert sum(p.numel() for p in model.parameters()) == 60_965_224
    assert meta.wnids[0] == "n01440764" and meta.classes[0].startswith("tench")
    assert not meta.trained


def test_truncated_checkpoint_is_refused(tmp_path, tiny_checkpoint):
    data = tiny_checkpoint.read_bytes()
    for cut in (4, 100, len(data) // 2, len(data) - 1):
        p = tmp_path / f"cut{cut}.safetensors"
        p.write_bytes(data[:cut])
        with pytest.raises(CheckpointError) as err:
            load_model(p)
        assert str(err.value).startswith(str(p))


def test_tampered_weights_are_refused(tmp_path, tiny_checkpoint):
    data = bytearray(tiny_checkpoint.read_bytes())
    data[-10] ^= 0x01  # one bit of one weight
    p = tmp_path / "tampered.safetensors"
    p.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="digest mismatch"):
        load_model(p)


def test_tampered_metadata_is_refused(tmp_path, tiny_checkpoint):
    data = tiny_checkpoint.read_bytes()
    n = _header_len(tiny_checkpoint)
    header = data[8 : 8 + n].replace(b"class_1", b"class_X")
    assert header != data[8 : 8 + n]
    p = tmp_path / "renamed.safetensors"
    p.write_bytes(data[:8] + header + data[8 + n :])
    with pytest.raises(CheckpointError, match="metadata digest"):
        read_meta(p)


def test_foreign_and_missing_files_are_refused(tmp_path):
    foreign = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(3)}, str(foreign))
    with pytest.raises(CheckpointError, match="not an alexnet-kit checkpoint"):
        load_model(foreign)
    text = tmp_path / "notes.safetensors"
    text.write_text("hello")
    with pytest.raises(CheckpointError):
        load_model(text)
    with pytest.raises(CheckpointError, match="not found"):
        load_model(tmp_path / "nope.safetensors")
    empty = tmp_path / "empty.safetensors"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        load_model(empty)


def test_newer_format_version_is_refused_with_upgrade_hint(tmp_path, tiny_config):
    meta = ModelMeta(tiny_config, [str(i) for i in range(10)])
    d = meta.to_dict()
    d["version"] = 99
    with pytest.raises(ValueError, match="upgrade"):
        ModelMeta.from_json(json.dumps(d))


def test_wrong_architecture_in_state_is_refused(tmp_path, tiny_config):
    meta = ModelMeta(tiny_config, [str(i) for i in range(10)])
    with pytest.raises(ValueError):
        save_checkpoint(tmp_path / "x.safetensors", {"conv1.weight": torch.zeros(1)}, meta)


def test_checkpoint_is_written_atomically(tmp_path, tiny_config):
    path = make_checkpoint(tmp_path / "m.safetensors", tiny_config, seed=0)
    first = path.read_bytes()
    make_checkpoint(path, tiny_config, seed=1)
    assert path.read_bytes() != first
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]  # no temp file left behind
