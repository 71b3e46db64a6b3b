"""The recipe: each setting declared once (a field with its help and choices), files old and new load, bad values are one line."""
from __future__ import annotations

import argparse
import dataclasses
import subprocess
import sys

import pytest

from alexnet_kit.cli import build_parser
from alexnet_kit.config import AlexNetConfig
from alexnet_kit.errors import AlexKitError, FileProblem
from alexnet_kit.train.recipe import Recipe, apply_overrides, available, load_recipe, validate


def train_args(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["train", *argv])


def train_options() -> dict[str, argparse.Action]:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return {s: a for a in sub.choices["train"]._actions for s in a.option_strings}


def as_text(value) -> str:
    """A value as one writes it on the command line."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    return str(value)


def test_recipes_load_and_match_the_paper():
    assert {"paper", "quickstart", "caltech10", "finetune"} <= set(available())
    paper = load_recipe("paper")
    assert (paper.batch_size, paper.lr, paper.momentum, paper.weight_decay, paper.epochs, paper.lr_max_drops, paper.lr_factor) == (128, 0.01, 0.9, 5e-4, 90, 3, 0.1)
    assert paper.model_config(1000) == AlexNetConfig()  # the paper's network, 60,965,224 parameters
    quick = load_recipe("quickstart")
    cfg = quick.model_config(5)
    assert cfg.input_size == 224 and cfg.towers == 2 and quick.data == "examples/quickstart-data"
    for name in available():
        validate(load_recipe(name))


def test_every_config_field_is_a_model_option_with_its_help():
    options = train_options()
    fields = [f for f in dataclasses.fields(AlexNetConfig) if f.name != "num_classes"]  # the data decides
    assert len(fields) == len(dataclasses.fields(AlexNetConfig)) - 1
    for f in fields:
        action = options[f"--model.{f.name}"]
        assert f.metadata["help"] and action.help == f.metadata["help"]
    assert "--model.num_classes" not in options
    # every field's default, given as text, reads back as the paper's network
    r = apply_overrides(Recipe(), train_args(*[a for f in fields for a in (f"--model.{f.name}", as_text(f.default))]))
    assert set(r.model) == {f.name for f in fields}
    assert r.model_config(1000) == AlexNetConfig()
    r = apply_overrides(Recipe(), train_args("--model.activation", "tanh", "--model.lrn", "off", "--model.conv_channels", "16,32,48,48,32",
                                             "--model.lrn_alpha", "2e-4", "--model.init", "kaiming"))
    cfg = r.model_config(7)
    assert (cfg.activation, cfg.lrn, cfg.conv_channels, cfg.lrn_alpha, cfg.init, cfg.num_classes) == ("tanh", False, (16, 32, 48, 48, 32), 2e-4, "kaiming", 7)


def test_every_recipe_field_is_an_option_with_its_help():
    options = train_options()
    fields = [f for f in dataclasses.fields(Recipe) if f.name != "model"]
    for f in fields:
        action = options["--" + f.name.replace("_", "-")]
        assert f.metadata["help"] and action.help == f.metadata["help"]
    r = apply_overrides(load_recipe("quickstart"), train_args("--lr", "0.02", "--batch-size", "64", "--input-std", "false", "--amp", "bf16"))
    assert (r.lr, r.batch_size, r.input_std, r.amp) == (0.02, 64, False, "bf16")


@pytest.mark.parametrize("cls, flag", [(Recipe, "--{}"), (AlexNetConfig, "--model.{}")])
def test_choices_are_accepted_and_anything_else_refused_in_one_line(cls, flag):
    with_choices = [f for f in dataclasses.fields(cls) if "choices" in f.metadata]
    assert with_choices
    for f in with_choices:
        option = flag.format(f.name.replace("_", "-") if cls is Recipe else f.name)
        for allowed in f.metadata["choices"]:
            r = apply_overrides(load_recipe("quickstart"), train_args(option, allowed))
            assert (getattr(r, f.name) if cls is Recipe else getattr(r.model_config(5), f.name)) == allowed
        with pytest.raises(AlexKitError) as e:
            apply_overrides(load_recipe("quickstart"), train_args(option, "nonsense"))
        assert str(e.value) == f"{option} must be one of {', '.join(f.metadata['choices'])}, not 'nonsense'"


def test_cli_refuses_a_bad_value_in_one_line_without_traceback(tmp_path):
    for args, message in [
        (["--model.activation", "gelu"], "--model.activation must be one of relu, tanh, not 'gelu'"),
        (["--amp", "fp8"], "--amp must be one of auto, bf16, fp16, off, not 'fp8'"),
        (["--model.lrn", "maybe"], "--model.lrn: not a boolean: 'maybe'"),
        (["--model.towers", "3"], "bad [model] settings (32 channels do not split into 3 towers)"),
    ]:
        p = subprocess.run([sys.executable, "-m", "alexnet_kit", "train", "--data", str(tmp_path), *args], capture_output=True, text=True)
        assert p.returncode != 0 and message in p.stderr, p.stderr
        assert len(p.stderr.strip().splitlines()) == 1 and "Traceback" not in p.stderr


@pytest.mark.parametrize("text, message", [
    ('epochs = "ten"', "epochs must be an integer, not 'ten'"),
    ('parallel = "gpu"', "parallel must be one of none, model, data, not 'gpu'"),
    ('compile = 1', "compile must be true or false, not 1"),
    ('[model]\nlrn_scope = "gpu"', "model.lrn_scope must be one of tower, all, not 'gpu'"),
    ('[model]\nconv_channels = "96,256"', "model.conv_channels must be a list of integers, not '96,256'"),
    ('[model]\nbogus = 1', "unknown [model] keys ['bogus']"),
    ('bogus = 1', "unknown recipe keys ['bogus']"),
])
def test_a_bad_recipe_file_is_refused_naming_file_and_field(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text + "\n")
    with pytest.raises(FileProblem) as e:
        load_recipe(str(path))
    assert str(e.value) == f"{path}: {message}"


def test_a_recipe_file_written_before_the_fields_carried_their_help_loads(tmp_path):
    # The paper recipe as shipped before the config fields carried their help (integers where floats are meant, lists for tuples),
    # plus a [model] num_classes, which the data has always overridden.
    path = tmp_path / "old.toml"
    path.write_text(
        'epochs = 90\nbatch_size = 128\nlr = 0.01\nmomentum = 0.9\nweight_decay = 0.0005\nlr_factor = 0.1\nlr_patience = 2\n'
        'lr_max_drops = 3\npca_std = 0.1\nworkers = 8\ncheckpoint_minutes = 10\nkeep_last = 3\nout = "runs/paper"\n'
        'input_std = false\nparallel = "none"\namp = "auto"\nchannels_last = "auto"\n\n'
        '[model]\nnum_classes = 10\nconv_channels = [96, 256, 384, 384, 256]\nfc_features = 4096\ntowers = 2\ninit = "paper"\n'
        'lrn_convention = "paper"\ndropout = 0.5\n')
    r = validate(load_recipe(str(path)))
    assert r.name == "old" and r.checkpoint_minutes == 10 and r.out == "runs/paper"
    assert r.model_config(1000) == AlexNetConfig()
    assert r.to_dict()["model"]["conv_channels"] == [96, 256, 384, 384, 256]


def test_train_help_and_the_config_import_no_torch():
    code = (
        "import contextlib, io, sys\n"
        "from alexnet_kit import AlexNetConfig\n"
        "from alexnet_kit.cli import build_parser\n"
        "from alexnet_kit.train.recipe import load_recipe\n"
        "out = io.StringIO()\n"
        "with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):\n"
        "    build_parser().parse_args(['train', '--help'])\n"
        "assert '--model.lrn_scope {tower,all}' in out.getvalue() and '--pretrained-lr-mult' in out.getvalue()\n"
        "assert load_recipe('paper').model_config(1000) == AlexNetConfig()\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'torch'))\n"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "[]"
