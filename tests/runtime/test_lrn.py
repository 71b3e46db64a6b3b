"""LRN (§3.3) against a direct loop over the paper's formula, both conventions."""
import pytest
import torch

from alexnet_kit.lrn import LocalResponseNorm
from helpers import TINY_WIDTHS, lrn_by_the_formula


@pytest.mark.parametrize("convention", ["paper", "divided"])
@pytest.mark.parametrize("groups", [1, 2])
def test_matches_the_formula(convention, groups):
    torch.manual_seed(0)
    # ReLU outputs of realistic scale: large enough that the sum matters
    a = torch.relu(torch.randn(2, 16, 5, 5) * 60)
    got = LocalResponseNorm(16, groups=groups, convention=convention)(a)
    want = lrn_by_the_formula(a, divide_by_n=convention == "divided", groups=groups)
    torch.testing.assert_close(got.double(), want, rtol=1e-6, atol=1e-6)


def test_the_conventions_differ_by_a_factor_n_in_alpha():
    a = torch.relu(torch.randn(1, 8, 3, 3) * 100)
    paper = LocalResponseNorm(8, convention="paper", alpha=1e-4)(a)
    divided_5x = LocalResponseNorm(8, convention="divided", alpha=5e-4)(a)
    torch.testing.assert_close(paper, divided_5x)
    assert not torch.allclose(paper, LocalResponseNorm(8, convention="divided", alpha=1e-4)(a))


def test_divided_convention_equals_pytorch_lrn():
    a = torch.relu(torch.randn(2, 96, 7, 7) * 80)
    ours = LocalResponseNorm(96, convention="divided")(a)
    theirs = torch.nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2.0)(a)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)


def test_tower_boundary_is_not_crossed():
    """Per-tower LRN: channel 47's window stops at 47, channel 48's starts at 48."""
    a = torch.relu(torch.randn(1, 96, 3, 3) * 80)
    per_tower = LocalResponseNorm(96, groups=2)(a)
    across = LocalResponseNorm(96, groups=1)(a)
    # far from the boundary the two agree exactly...
    torch.testing.assert_close(per_tower[:, :46], across[:, :46])
    torch.testing.assert_close(per_tower[:, 50:], across[:, 50:])
    # ...at the boundary they are different functions (DESIGN.md)
    assert not torch.allclose(per_tower[:, 46:50], across[:, 46:50])
    # and per-tower equals running each tower's maps on its own
    halves = torch.cat([LocalResponseNorm(48)(a[:, :48]), LocalResponseNorm(48)(a[:, 48:])], 1)
    torch.testing.assert_close(per_tower, halves)


def test_no_learned_parameters_and_no_state_in_checkpoints():
    lrn = LocalResponseNorm(96, groups=2)
    assert list(lrn.parameters()) == []
    assert lrn.state_dict() == {}


def test_rejects_bad_arguments():
    with pytest.raises(ValueError):
        LocalResponseNorm(96, convention="caffe")
    with pytest.raises(ValueError):
        LocalResponseNorm(95, groups=2)


def test_caffe_across_map_lrn_in_a_two_tower_model_matches_caffes_formula():
    """Caffe normalises across all maps, over the tower boundary: k=1, alpha/n (lrn_layer.cpp)."""
    from alexnet_kit.model import AlexNet, AlexNetConfig

    cfg = AlexNetConfig(**TINY_WIDTHS, num_classes=10, lrn_scope="all",
                        lrn_k=1.0, lrn_convention="divided")
    model = AlexNet(cfg)
    a = torch.relu(torch.randn(2, 16, 5, 5) * 80)
    want = lrn_by_the_formula(a, k=1.0, divide_by_n=True, groups=1)
    torch.testing.assert_close(model.norm1(a).double(), want, rtol=1e-6, atol=1e-6)
    per_tower = lrn_by_the_formula(a, k=1.0, divide_by_n=True, groups=2)
    assert (want - per_tower).abs()[:, 6:10].max() > 1e-3  # the maps next to the boundary differ
    assert torch.equal(want[:, :6], per_tower[:, :6])


@pytest.mark.parametrize("autocast", [False, True])
def test_fp16_input_with_large_activations_stays_finite_and_right(autocast):
    # conv1/conv2 ReLU maps exceed 255, where x * x overflows fp16's 65504
    torch.manual_seed(0)
    a = torch.relu(torch.randn(2, 16, 5, 5) * 600).half()
    assert float(a.max()) > 1000
    lrn = LocalResponseNorm(16, groups=2)
    with torch.autocast("cpu", dtype=torch.float16, enabled=autocast):
        y = lrn(a)
    assert y.dtype == torch.float16 and torch.isfinite(y).all()
    want = lrn_by_the_formula(a.float(), groups=2)
    torch.testing.assert_close(y.double(), want, rtol=2e-3, atol=1e-3)  # fp16 keeps 11 bits
