"""The paper's network: sizes, counts, connectivity and initialisation (§3, §5)."""
import dataclasses
import math

import pytest
import torch

from alexnet_kit.model import AlexNet, AlexNetConfig, count_parameters, neuron_counts
from helpers import TINY_WIDTHS


@pytest.fixture(scope="module")
def paper_model():
    torch.manual_seed(0)
    return AlexNet().eval()


def test_parameter_count_is_the_papers(paper_model):
    assert count_parameters(paper_model) == 60_965_224


def test_per_layer_parameters(paper_model):
    per_layer = {n: sum(p.numel() for p in m.parameters()) for n, m in paper_model.layers().items()}
    assert per_layer == {
        "conv1": 96 * 3 * 11 * 11 + 96,
        "conv2": 256 * 48 * 5 * 5 + 256,  # same-GPU: each kernel sees 48 maps
        "conv3": 384 * 256 * 3 * 3 + 384,  # cross-GPU: all 256 maps
        "conv4": 384 * 192 * 3 * 3 + 384,
        "conv5": 256 * 192 * 3 * 3 + 256,
        "fc6": 9216 * 4096 + 4096,
        "fc7": 4096 * 4096 + 4096,
        "fc8": 4096 * 1000 + 1000,
    }


def test_output_shapes_per_layer(paper_model):
    seen = {}
    hooks = [
        getattr(paper_model, name).register_forward_hook(lambda m, i, o, name=name: seen.__setitem__(name, tuple(o.shape[1:])))
        for name in ("conv1", "pool1", "conv2", "pool2", "conv3", "conv4", "conv5", "pool5", "fc6", "fc7", "fc8")
    ]
    with torch.no_grad():
        paper_model(torch.randn(2, 3, 224, 224))
    for h in hooks:
        h.remove()
    assert [seen[n][-1] for n in ("conv1", "pool1", "conv3", "conv4", "conv5", "pool5")] == [55, 27, 13, 13, 13, 6]
    assert seen["conv1"] == (96, 55, 55)
    assert seen["pool2"] == (256, 13, 13)
    assert seen["pool5"] == (256, 6, 6)
    assert seen["fc6"] == seen["fc7"] == (4096,)
    assert seen["fc8"] == (1000,)
    # the config's own arithmetic agrees with the layers
    assert {k: v for k, v in paper_model.config.feature_shapes().items()} == {
        k: seen[k] for k in paper_model.config.feature_shapes()
    }


def test_neuron_counts_match_the_paper_except_its_first_layer_typo():
    counts = neuron_counts(AlexNetConfig())
    # §3.5: "253,440-186,624-64,896-64,896-43,264-4096-4096-1000"
    assert list(counts.values())[1:] == [186_624, 64_896, 64_896, 43_264, 4096, 4096, 1000]
    assert counts["conv1"] == 55 * 55 * 96


def test_grouped_connectivity(paper_model):
    assert paper_model.conv1.groups == 1
    assert paper_model.conv2.groups == 2  # §3.5 same GPU only
    assert paper_model.conv3.groups == 1  # crosses GPUs
    assert paper_model.conv4.groups == 2
    assert paper_model.conv5.groups == 2


def test_conv2_group_ignores_the_other_towers_maps(paper_model):
    """Changing tower 1's conv1 maps must not change tower 0's conv2 output."""
    x = torch.randn(1, 96, 27, 27)
    y = x.clone()
    y[:, 48:] = torch.randn(1, 48, 27, 27)
    with torch.no_grad():
        a, b = paper_model.conv2(x), paper_model.conv2(y)
    assert torch.equal(a[:, :128], b[:, :128])
    assert not torch.allclose(a[:, 128:], b[:, 128:])


def test_overlapping_pooling_and_lrn_are_in_place(paper_model):
    assert (paper_model.pool1.kernel_size, paper_model.pool1.stride) == (3, 2)  # §3.4 z=3 > s=2
    assert paper_model.norm1.size == 5 and paper_model.norm1.k == 2.0
    assert paper_model.norm1.alpha == 1e-4 and paper_model.norm1.beta == 0.75
    assert paper_model.norm1.groups == 2  # per tower
    assert paper_model.drop6.p == paper_model.drop7.p == 0.5  # §4.2


def test_paper_initialisation():
    torch.manual_seed(1)
    m = AlexNet()
    for name, layer in m.layers().items():
        w = layer.weight.detach()
        assert abs(w.mean().item()) < 1e-3, name
        assert w.std().item() == pytest.approx(0.01, rel=0.05), name
        expected_bias = 1.0 if name in ("conv2", "conv4", "conv5", "fc6", "fc7") else 0.0
        assert torch.all(layer.bias == expected_bias), name


def test_fc7_features_are_post_relu_4096(paper_model):
    with torch.no_grad():
        x = torch.randn(3, 3, 224, 224) * 50
        f = paper_model.fc7_features(x)
        logits, f2 = paper_model.logits_and_features(x)
    assert f.shape == (3, 4096)
    assert (f >= 0).all()
    assert torch.equal(f, f2)
    assert torch.allclose(logits, paper_model(x))


@pytest.mark.parametrize(
    "change",
    [dict(activation="tanh"), dict(lrn=False), dict(overlapping_pool=False), dict(towers=1), dict(dropout=0.0)],
)
def test_ablation_variants_keep_the_shapes(change):
    cfg = AlexNetConfig(num_classes=7, **TINY_WIDTHS, **change)
    m = AlexNet(cfg).eval()
    with torch.no_grad():
        out = m(torch.randn(2, 3, 224, 224))
    assert out.shape == (2, 7)
    assert cfg.feature_shapes()["pool5"] == (32, 6, 6)  # s=z=2 also gives 6x6 (§3.4)


def test_config_round_trip_and_validation():
    cfg = AlexNetConfig(num_classes=10, lrn_convention="divided")
    assert AlexNetConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError):
        AlexNetConfig(conv_channels=(95, 256, 384, 384, 256))  # odd: cannot split in two towers
    with pytest.raises(ValueError):
        AlexNetConfig.from_dict({**cfg.to_dict(), "bogus": 1})


def test_about_724_million_multiply_adds():
    cfg = AlexNetConfig()
    shapes = cfg.feature_shapes()
    k = {"conv1": 3 * 11 * 11, "conv2": 48 * 25, "conv3": 256 * 9, "conv4": 192 * 9, "conv5": 192 * 9}
    conv = sum(math.prod(shapes[n]) * k[n] for n in k)
    fc = 9216 * 4096 + 4096 * 4096 + 4096 * 1000
    assert 700e6 < conv + fc < 740e6


# -- fields for imported weights: the paper's default is untouched ---------

def test_paper_default_keeps_its_values_and_function(paper_model):
    cfg = AlexNetConfig()
    assert (cfg.conv1_padding, cfg.lrn_scope, cfg.ceil_pool) == (2, "tower", False)
    assert paper_model.conv1.padding == (2, 2) and not paper_model.pool1.ceil_mode
    assert paper_model.norm1.groups == 2 and paper_model.norm2.groups == 2  # LRN within each tower (§3.3)
    # an old checkpoint's config (without the new fields) reads as the paper's
    old = {k: v for k, v in cfg.to_dict().items() if k not in ("conv1_padding", "lrn_scope", "ceil_pool")}
    assert AlexNetConfig.from_dict(old) == cfg


@pytest.mark.slow  # over 2.5 s on 2 cores: out of make test-fast
def test_caffe_zoo_and_torchvision_architectures():
    from alexnet_kit.pretrained.registry import CAFFE_CONFIG, TORCHVISION_CONFIG, ZOO_CONFIG

    sizes = lambda c: [c.feature_shapes()[k][1] for k in ("conv1", "pool1", "pool2", "pool5")]  # noqa: E731
    assert sizes(CAFFE_CONFIG) == [55, 27, 13, 6]  # 227, no padding: ceil and floor agree
    assert sizes(ZOO_CONFIG) == [54, 27, 13, 6]  # 224, no padding: only rounding up reaches 6x6
    assert sizes(dataclasses.replace(ZOO_CONFIG, ceil_pool=False)) == [54, 26, 12, 5]
    assert count_parameters(AlexNet(CAFFE_CONFIG)) == 60_965_224
    assert count_parameters(AlexNet(TORCHVISION_CONFIG)) == 61_100_840
    m = AlexNet(CAFFE_CONFIG).eval()
    assert m.norm1.groups == 1 and m.conv2.groups == 2  # LRN across all maps, convolutions still grouped
    with torch.no_grad():
        for cfg in (CAFFE_CONFIG, ZOO_CONFIG, TORCHVISION_CONFIG):
            n = cfg.input_size
            assert AlexNet(cfg).eval().conv_features(torch.randn(1, 3, n, n)).shape == (1, 9216)


def test_new_fields_are_validated():
    with pytest.raises(ValueError, match="lrn_scope"):
        AlexNetConfig(lrn_scope="gpu")
    with pytest.raises(ValueError, match="conv1_padding"):
        AlexNetConfig(conv1_padding=-1)


def test_every_default_is_the_papers():
    assert AlexNetConfig().to_dict() == {
        "num_classes": 1000, "conv_channels": (96, 256, 384, 384, 256), "fc_features": 4096, "towers": 2, "input_size": 224,
        "activation": "relu", "lrn": True, "lrn_convention": "paper", "lrn_size": 5, "lrn_alpha": 1e-4, "lrn_beta": 0.75,
        "lrn_k": 2.0, "overlapping_pool": True, "conv1_padding": 2, "lrn_scope": "tower", "ceil_pool": False,
        "dropout": 0.5, "init": "paper",
    }


def test_config_lives_in_one_torch_free_module_with_help_and_choices():
    import alexnet_kit
    import alexnet_kit.config
    import alexnet_kit.model

    assert alexnet_kit.model.AlexNetConfig is alexnet_kit.config.AlexNetConfig is alexnet_kit.AlexNetConfig
    for f in dataclasses.fields(AlexNetConfig):
        assert f.metadata["help"], f.name
        for allowed in f.metadata.get("choices", ()):
            assert getattr(AlexNetConfig(**{f.name: allowed}), f.name) == allowed
        if "choices" in f.metadata:
            with pytest.raises(ValueError, match=f"^{f.name} must be one of {', '.join(f.metadata['choices'])}, not 'bogus'$"):
                AlexNetConfig(**{f.name: "bogus"})
    assert {f.name for f in dataclasses.fields(AlexNetConfig) if "choices" in f.metadata} == {"activation", "lrn_convention", "lrn_scope", "init"}
