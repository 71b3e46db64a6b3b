"""The demo's pictures: Figure 3's kernel grid and the ten-crop strip."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from alexnet_kit.apps.figures import crops_strip, kernel_grid, normalise_kernel, ten_crops
from alexnet_kit.images import load_square
from alexnet_kit.model import AlexNet, AlexNetConfig
from alexnet_kit.preprocess import Preprocess
from helpers import EXAMPLES


def tile_at(grid: np.ndarray, row: int, col: int, size: int, gap: int, top: int = 0) -> np.ndarray:
    y, x = top + row * (size + gap), col * (size + gap)
    return grid[y : y + size, x : x + size]


def test_kernel_grid_is_figure_3_layout():
    with torch.device("meta"):
        shape = AlexNet(AlexNetConfig()).conv1.weight.shape
    assert tuple(shape) == (96, 3, 11, 11)
    w = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    scale, gap, tower_gap = 4, 2, 12
    grid = kernel_grid(w, towers=2, columns=16, scale=scale, gap=gap, tower_gap=tower_gap)
    size = 11 * scale
    block_h = 3 * size + 2 * gap  # 48 kernels per tower: 3 rows of 16
    assert grid.shape == (2 * block_h + tower_gap, 16 * size + 15 * gap, 3)
    assert grid.dtype == np.uint8
    # kernel 0 top-left of tower 1; kernel 48 (the first on GPU 2) top-left of the lower block;
    # kernel 95 bottom-right of the lower block
    for k, (row, col, top) in {0: (0, 0, 0), 17: (1, 1, 0), 48: (0, 0, block_h + tower_gap), 95: (2, 15, block_h + tower_gap)}.items():
        expected = normalise_kernel(w[k].numpy()).repeat(scale, 0).repeat(scale, 1)
        np.testing.assert_array_equal(tile_at(grid, row, col, size, gap, top), expected)
    # the band between the towers is blank
    assert (grid[block_h : block_h + tower_gap] == 255).all()


def test_each_kernel_is_min_max_normalised_on_its_own():
    w = torch.zeros(4, 3, 11, 11)
    w[0] = torch.linspace(-1, 1, 363).reshape(3, 11, 11)
    w[1] = 1000 * torch.linspace(0, 1, 363).reshape(3, 11, 11)  # far larger scale, same full range
    w[2] = 7.0  # constant: mid grey, not a division by zero
    w[3, 0, 5, 5] = float("nan")  # broken weights must not crash the page
    grid = kernel_grid(w, towers=1, columns=4, scale=1, gap=1)
    t = [grid[:, i * 12 : i * 12 + 11] for i in range(4)]
    assert t[0].min() == 0 and t[0].max() == 255
    assert t[1].min() == 0 and t[1].max() == 255
    assert (t[2] == 128).all()
    assert (t[3] == 128).all()


def test_kernel_grid_refuses_wrong_shapes():
    with pytest.raises(ValueError, match="first-layer"):
        kernel_grid(torch.zeros(96, 1, 11, 11))
    with pytest.raises(ValueError, match="towers"):
        kernel_grid(torch.zeros(95, 3, 11, 11), towers=2)


def test_ten_crops_are_exactly_what_the_network_is_fed():
    photo = load_square(EXAMPLES / "cat.jpg", 256)
    pre = Preprocess()  # per-channel mean, std 1
    fed = pre.crops(photo[None], 10)  # (10, 3, 224, 224), mean subtracted
    mine = ten_crops(photo, pre)
    assert len(mine) == 10
    for i, crop in enumerate(mine):
        restored = (fed[i] + pre._mean_t).permute(1, 2, 0).round().numpy().astype(np.uint8)
        np.testing.assert_array_equal(crop, restored, err_msg=f"crop {i}")
    # the last five are mirrors of the first five, and the corners differ
    np.testing.assert_array_equal(mine[5], mine[0][:, ::-1])
    assert not np.array_equal(mine[0], mine[3])


def test_crops_strip_shows_five_above_their_mirrors():
    photo = load_square(EXAMPLES / "fish-bike.jpg", 256)
    strip = crops_strip(photo, Preprocess(), size=56, gap=4)
    assert strip.shape == (2 * 56 + 4, 5 * 56 + 4 * 4, 3)
    top_left, mirrored = strip[:56, :56], strip[60:, :56]
    np.testing.assert_array_equal(mirrored, top_left[:, ::-1])


def test_kernels_of_an_onnx_artifact_come_from_its_initialiser(tmp_path):
    """An exported fp32 ONNX file keeps conv1's weight; the demo draws Figure 3 from it."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    from alexnet_kit.apps.service import first_layer_weight

    w = np.random.default_rng(0).standard_normal((16, 3, 11, 11)).astype(np.float32)
    conv = helper.make_node("Conv", ["x", "model.conv1.weight"], ["y"], strides=[4, 4])
    graph = helper.make_graph([conv], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 224, 224])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(w, "model.conv1.weight")])
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph), str(path))
    got = first_layer_weight(object(), path)
    np.testing.assert_array_equal(got, w)
    assert first_layer_weight(object(), tmp_path / "m.ts") is None  # opaque formats: "not available"
