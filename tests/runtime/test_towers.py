"""The two-tower form (§3.2) computes the grouped model's function."""
import torch

from alexnet_kit.model import AlexNet, AlexNetConfig
from alexnet_kit.towers import TowerAlexNet
from helpers import TINY_WIDTHS


def test_two_towers_on_cpu_cpu_equal_the_grouped_model():
    torch.manual_seed(0)
    grouped = AlexNet().eval()
    towers = TowerAlexNet.from_grouped(grouped, ["cpu", "cpu"]).eval()
    x = torch.randn(3, 3, 224, 224) * 60
    with torch.no_grad():
        torch.testing.assert_close(towers(x), grouped(x), rtol=1e-5, atol=1e-5)
        feats = torch.cat(towers.fc7_features(x), 1)
        torch.testing.assert_close(feats, grouped.fc7_features(x), rtol=1e-5, atol=1e-5)


def test_weights_round_trip_bitwise_and_count():
    torch.manual_seed(1)
    grouped = AlexNet()
    towers = TowerAlexNet.from_grouped(grouped, ["cpu", "cpu"])
    assert sum(p.numel() for p in towers.parameters()) == 60_965_224
    back = towers.grouped_state_dict()
    for k, v in grouped.state_dict().items():
        assert torch.equal(back[k], v), k


def test_each_tower_holds_half_and_sees_only_its_half_where_the_paper_says():
    towers = TowerAlexNet.initialised(AlexNetConfig(), ["cpu", "cpu"])
    t0 = towers.towers[0]
    assert t0.conv1.out_channels == 48
    assert t0.conv2.in_channels == 48  # same GPU
    assert t0.conv3.in_channels == 256  # both GPUs
    assert t0.conv4.in_channels == 192  # same GPU
    assert t0.fc6.in_features == 9216 and t0.fc6.out_features == 2048
    assert t0.fc8.out_features == 500


def test_odd_class_count_splits_unevenly_but_exactly():
    torch.manual_seed(2)
    cfg = AlexNetConfig(num_classes=101, **TINY_WIDTHS)
    grouped = AlexNet(cfg).eval()
    towers = TowerAlexNet.from_grouped(grouped, ["cpu", "cpu"]).eval()
    assert [t.fc8.out_features for t in towers.towers] == [51, 50]
    x = torch.randn(2, 3, 224, 224) * 60
    with torch.no_grad():
        torch.testing.assert_close(towers(x), grouped(x), rtol=1e-5, atol=1e-5)
    assert torch.equal(towers.to_grouped().fc8.weight, grouped.fc8.weight)


def test_two_towers_with_caffes_across_map_lrn_equal_the_grouped_model():
    """Across-map LRN needs the other tower's neighbouring maps at the boundary (a halo exchange)."""
    import dataclasses
    import math

    from alexnet_kit.pretrained.registry import CAFFE_CONFIG

    cfg = dataclasses.replace(CAFFE_CONFIG, num_classes=11, **TINY_WIDTHS)
    torch.manual_seed(3)
    grouped = AlexNet(cfg).eval()
    with torch.no_grad():  # activations of pixel scale, so that LRN (k=1) really normalises
        for layer in grouped.layers().values():
            layer.weight.normal_(0, math.sqrt(2 / math.prod(layer.weight.shape[1:])))
    towers = TowerAlexNet.from_grouped(grouped, ["cpu", "cpu"]).eval()
    x = torch.randn(2, 3, 227, 227) * 60
    with torch.no_grad():
        torch.testing.assert_close(towers(x), grouped(x), rtol=1e-5, atol=1e-5)
        # and the check can fail: the paper's per-tower LRN is another function at the boundary
        per_tower = TowerAlexNet.from_grouped(grouped, ["cpu", "cpu"]).eval()
        per_tower.config = dataclasses.replace(cfg, lrn_scope="tower")
        for t in per_tower.towers:
            for n in ("norm1", "norm2"):
                old = getattr(t, n)
                setattr(t, n, type(old)(old.channels - 4, 1, old.size, old.alpha, old.beta, old.k, old.convention))
        assert (per_tower(x) - grouped(x)).abs().max() > 1e-3
