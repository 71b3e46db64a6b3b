"""The recipe files: they load and the paper's recipe is the paper's."""
from __future__ import annotations

from alexnet_kit.model import AlexNetConfig
from alexnet_kit.train.recipe import _MODEL_FIELDS, available, load_recipe


def test_recipes_load_and_match_the_paper():
    assert {"paper", "quickstart", "caltech10"} <= set(available())
    paper = load_recipe("paper")
    assert (paper.batch_size, paper.lr, paper.momentum, paper.weight_decay, paper.epochs, paper.lr_max_drops, paper.lr_factor) == (128, 0.01, 0.9, 5e-4, 90, 3, 0.1)
    assert paper.model_config(1000) == AlexNetConfig()  # the paper's network, 60,965,224 parameters
    quick = load_recipe("quickstart")
    cfg = quick.model_config(5)
    assert cfg.input_size == 224 and cfg.towers == 2 and quick.data == "examples/quickstart-data"
    # every model field can be overridden from the command line
    defaults = {k: v for k, v in AlexNetConfig().to_dict().items() if k != "num_classes"}
    assert set(_MODEL_FIELDS) == set(defaults)
    assert all(isinstance(defaults[k], kind) for k, kind in _MODEL_FIELDS.items())
