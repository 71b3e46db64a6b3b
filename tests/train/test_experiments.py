"""The experiment machinery at a tiny size: results JSON and PNG plots
are written and well-formed, and the numbers in them follow from the runs.
The experiments themselves (default size) are not tests: see docs/experiments.md.
"""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import shared


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """Decoded-photo caches in a temporary folder, not the user's home."""
    mp = pytest.MonkeyPatch()
    d = tmp_path_factory.mktemp("cache")
    mp.setenv("XDG_CACHE_HOME", str(d))
    yield d / "alexnet-kit"
    mp.undo()


def read_png(path):
    with Image.open(path) as im:
        im.load()
        assert im.format == "PNG"
        assert im.width > 200 and im.height > 100
        return im


def read_json(path):
    d = json.loads(path.read_text())
    assert d["experiment"] == path.stem
    assert d["machine"]["torch"] == torch.__version__
    return d


def test_load_photos_caches_warp_and_crop_apart(tmp_path, monkeypatch):
    from helpers import EXAMPLES

    from alexnet_kit.train.experiments.common import load_photos

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    files = [EXAMPLES / "cat.jpg", EXAMPLES / "fish-bike.jpg"]
    crop, ok_c = load_photos(files, 64, mode="crop")
    warp, ok_w = load_photos(files, 64, mode="warp")
    assert ok_c.all() and ok_w.all()
    assert not np.array_equal(crop, warp)
    assert len(list((tmp_path / "alexnet-kit").glob("*.npz"))) == 2
    # each comes back from its own cache file, not the other's
    assert np.array_equal(load_photos(files, 64, mode="warp")[0], warp)
    assert np.array_equal(load_photos(files, 64, mode="crop")[0], crop)


# ---- Figure 1 --------------------------------------------------------------------


def test_four_layer_net_has_cuda_convnets_18pct_shapes_and_the_chosen_activation():
    from alexnet_kit.train.experiments.convnet18 import FourLayerNet, SpatialResponseNorm

    nn = torch.nn
    for act, cls in (("relu", nn.ReLU), ("tanh", nn.Tanh)):
        torch.manual_seed(0)
        net = FourLayerNet(act)
        weighted = [m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
        # layers-18pct.cfg: conv 5x5 32, 32, 64 (pad 2), fc10 on 4x4x64
        assert [tuple(m.weight.shape) for m in weighted] == [(32, 3, 5, 5), (32, 32, 5, 5), (64, 32, 5, 5), (10, 1024)]
        assert all(m.padding == (2, 2) for m in weighted[:3])
        assert sum(isinstance(m, cls) for m in net.modules()) == 3
        kinds = [type(m) for m in net.features if isinstance(m, (nn.MaxPool2d, nn.AvgPool2d, SpatialResponseNorm))]
        assert kinds == [nn.MaxPool2d, SpatialResponseNorm, nn.AvgPool2d, SpatialResponseNorm, nn.AvgPool2d]
        # initW 0.0001, 0.01, 0.01, 0.01 (Gaussian std), biases 0
        stds = [float(m.weight.detach().std()) for m in weighted]
        assert stds == pytest.approx([1e-4, 1e-2, 1e-2, 1e-2], rel=0.1)
        assert all(not m.bias.detach().any() for m in weighted)
        sizes, h = [], torch.zeros(2, 3, 32, 32)
        for m in net.features:
            h = m(h)
            if isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)):
                sizes.append(h.shape[-1])
        assert sizes == [16, 8, 4]
        assert net(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    torch.manual_seed(3)
    a = FourLayerNet("relu")
    torch.manual_seed(3)
    b = FourLayerNet("tanh")
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))  # the same draw for both


def test_response_norm_and_pools_compute_cuda_convnets_formulas():
    from alexnet_kit.train.experiments.convnet18 import FourLayerNet, SpatialResponseNorm

    torch.manual_seed(0)
    a = torch.randn(2, 3, 6, 6) * 300  # large enough for the normalisation to matter
    # rnorm: b = a / (1 + scale / size^2 * sum over the size x size window, clipped at the border) ^ pow
    ref = torch.empty_like(a)
    for i in range(6):
        for j in range(6):
            s = (a[:, :, max(0, i - 1):i + 2, max(0, j - 1):j + 2] ** 2).sum((2, 3))
            ref[:, :, i, j] = a[:, :, i, j] / (1 + 5e-5 / 9 * s) ** 0.75
    out = SpatialResponseNorm(3, 5e-5, 0.75)(a)
    assert torch.allclose(out, ref, rtol=1e-5)
    assert (out - a).abs().max() > 1  # not the identity at this scale
    # pools: outputsX = ceil((S - 3) / 2) + 1, a window clipped at the border averages only the pixels inside
    net = FourLayerNet("relu")
    avg = [m for m in net.features if isinstance(m, torch.nn.AvgPool2d)][0]
    mx = [m for m in net.features if isinstance(m, torch.nn.MaxPool2d)][0]
    x = torch.randn(1, 2, 8, 8)
    n = -(-(8 - 3) // 2) + 1
    want_avg = torch.stack([torch.stack([x[0, :, 2 * i:2 * i + 3, 2 * j:2 * j + 3].mean((1, 2)) for j in range(n)], -1)
                            for i in range(n)], -2)
    want_max = torch.stack([torch.stack([x[0, :, 2 * i:2 * i + 3, 2 * j:2 * j + 3].amax((1, 2)) for j in range(n)], -1)
                            for i in range(n)], -2)
    assert torch.allclose(avg(x)[0], want_avg, atol=1e-6)
    assert torch.equal(mx(x)[0], want_max)


def test_fig1_trains_with_papersgd_no_weight_decay_and_double_bias_rate():
    from alexnet_kit.train.experiments.convnet18 import FourLayerNet, paper_optimizer
    from alexnet_kit.train.optim import PaperSGD

    net = FourLayerNet("tanh", width=(4, 4, 8))
    opt = paper_optimizer(net, 0.01)
    assert isinstance(opt, PaperSGD)
    assert all(g["weight_decay"] == 0 and g["momentum"] == 0.9 for g in opt.param_groups)
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    torch.nn.functional.cross_entropy(net(x), y).backward()
    grads = {n: p.grad.clone() for n, p in net.named_parameters()}
    opt.step()
    for n, p in net.named_parameters():
        # first step from zero velocity: w + v with v = -eps * grad (epsB = 2 epsW), nothing pulls w towards 0
        eps = 0.02 if n.endswith("bias") else 0.01
        assert torch.allclose(p.detach(), before[n] - eps * grads[n], atol=1e-7), n
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(net.parameters()))


def test_sweep_prefers_reaching_the_target_sooner_then_lower_error():
    from alexnet_kit.train.experiments.fig1 import _speed_key

    _better = lambda a, b: _speed_key(a) < _speed_key(b)  # noqa: E731  (run a trained faster than run b)
    r = lambda e, err, div=False: {"epochs_to_target": e, "train_error": [err], "diverged": div}  # noqa: E731
    assert _better(r(3, 0.2), r(5, 0.1))
    assert not _better(r(None, 0.3), r(9, 0.24))
    assert _better(r(None, 0.3), r(None, 0.4))
    assert _better(r(4, 0.2), r(4, 0.24))
    assert _better(r(None, 0.9), r(None, 0.8, div=True))
    assert _better({"epochs_to_target": None, "train_error": [0.5, 0.4]}, {"epochs_to_target": None, "train_error": [0.6, 0.4]})


def test_the_best_rate_does_not_depend_on_the_order_of_the_sweep():
    from alexnet_kit.train.experiments.fig1 import best_of

    tie = [{"lr": lr, "epochs_to_target": None, "train_error": [0.7, 0.6], "diverged": False} for lr in (0.004, 0.001, 0.002)]
    assert best_of(tie)["lr"] == best_of(tie[::-1])["lr"] == 0.001


def test_sweep_grows_past_its_edge_until_the_best_rate_is_inside():
    from alexnet_kit.train.experiments.fig1 import next_rate

    r = lambda lr, e, err=0.3, div=False: {"lr": lr, "epochs_to_target": e, "train_error": [err], "diverged": div}  # noqa: E731
    assert next_rate([r(0.001, 9), r(0.002, 6), r(0.004, 4)], 8) == pytest.approx(0.008)  # best at the top
    assert next_rate([r(0.001, 4), r(0.002, 6), r(0.004, None)], 8) == pytest.approx(0.0005)  # best at the bottom
    assert next_rate([r(0.001, 9), r(0.002, 4), r(0.004, 6)], 8) is None  # inside
    assert next_rate([r(0.001, 9), r(0.002, 4), r(0.004, None, div=True)], 8) is None  # the larger rate diverged
    assert next_rate([r(0.001, 9), r(0.002, 6), r(0.004, 4)], 3) is None  # the cap
    assert next_rate([r(0.01, None, 0.5), r(0.03, None, 0.4)], 8) == pytest.approx(0.09)  # the grid's own ratio
    with pytest.raises(ValueError):
        next_rate([r(0.01, 3)], 8)


@pytest.mark.slow
def test_fig1_tiny_writes_results_and_plot(tmp_path, cache):
    shared("cifar10", "train")
    from alexnet_kit.train.experiments import fig1

    fig1.run(tmp_path, "tiny", seeds=2, max_epochs=2, jobs=1, log=lambda *a: None)
    d = read_json(tmp_path / "fig1_relu_tanh.json")
    read_png(tmp_path / "fig1_relu_tanh.png")
    assert d["train_photos"] == 100 and d["target_train_error"] == 0.25
    assert not list(tmp_path.glob("*.partial.*"))  # removed once the results are written
    for act in ("relu", "tanh"):
        a = d[act]
        rates = [r["lr"] for r in a["sweep"]]
        assert rates == sorted(rates) and len(set(rates)) == len(rates)
        assert sorted(fig1.SIZES["tiny"].lrs[act] + a["sweep_added"]) == pytest.approx(rates)
        assert a["lr"] in rates and a["lr"] == fig1.best_of(a["sweep"])["lr"]
        # the sweep stops growing only with its best inside, or at the cap
        assert a["lr_inside_sweep"] or len(rates) == fig1.SIZES["tiny"].max_rates
        assert a["lr_inside_sweep"] == (min(rates) < a["lr"] < max(rates))
        assert [r["seed"] for r in a["runs"]] == [0, 1] and all(r["lr"] == a["lr"] for r in a["runs"])
        swept = next(r for r in a["sweep"] if r["lr"] == a["lr"])["train_error"]
        assert a["runs"][0]["train_error"][:len(swept)] == swept  # seed 0 is the sweep's winner, trained on
        for r in a["runs"]:
            assert 1 <= len(r["train_error"]) <= 2
            assert all(0 <= e <= 1 for e in r["train_error"])
            assert r["epochs_to_target"] in (None, len(r["train_error"]))
            assert 0 <= r["test_error"] <= 1
        assert a["epochs_to_target"] == [r["epochs_to_target"] for r in a["runs"]]
    assert len(d["speedup_per_seed"]) == 2
    assert SIZES_UNCHANGED()


def _fig1_photos():
    """30 shared CIFAR-10 training photos as fig1's input, and their labels."""
    shared("cifar10", "train")
    from alexnet_kit.train.experiments import fig1

    photos, labels, _ = fig1.load_cifar("train", 3)
    return fig1.to_input(photos, photos.permute(0, 3, 1, 2).float().mean(0)), labels


def _fig1_study(act, cfg, x, y, partial):
    from alexnet_kit.train.experiments import fig1

    return fig1.activation_study(act, x, y, x[:6], y[:6], cfg, "cpu", log=lambda *a: None, partial=partial)


@pytest.mark.slow
def test_fig1_study_resumes_from_its_partial_file(tmp_path, cache):
    from alexnet_kit.train.experiments import fig1

    x, y = _fig1_photos()
    cfg = dataclasses.replace(fig1.SIZES["tiny"], seeds=1, max_epochs=1, max_rates=2)
    part = tmp_path / "p.json"
    first = _fig1_study("relu", cfg, x, y, part)
    assert json.loads(part.read_text())["lr"] == first["lr"]
    cfg.seeds = 2  # one more seed: the sweep and seed 0 are read back, only seed 1 trains
    second = _fig1_study("relu", cfg, x, y, part)
    assert second["sweep"] == first["sweep"] and second["runs"][0] == first["runs"][0]
    assert [r["seed"] for r in second["runs"]] == [0, 1]
    cfg.max_epochs = 2  # another setting: nothing is reused
    third = _fig1_study("relu", cfg, x, y, part)
    assert max(len(r["train_error"]) for r in third["sweep"]) == 2


@pytest.mark.slow
def test_fig1_a_sweep_that_ended_before_the_cap_is_kept_when_the_cap_grows(tmp_path, cache):
    from alexnet_kit.train.experiments import fig1

    x, y = _fig1_photos()
    cfg = dataclasses.replace(fig1.SIZES["tiny"], seeds=1, max_epochs=2, sweep_epochs=1, max_rates=2)
    part = tmp_path / "p.json"
    first = _fig1_study("tanh", cfg, x, y, part)
    assert first["runs"][0]["epochs_to_target"] is None and len(first["runs"][0]["train_error"]) == 2
    cfg.max_epochs = 3
    second = _fig1_study("tanh", cfg, x, y, part)
    assert second["sweep"] == first["sweep"]  # the sweep ended at sweep_epochs, before either cap
    # seed 0 did not reach 25% within the old cap, so it trained again from its seed: the same curve, then one more epoch
    assert len(second["runs"][0]["train_error"]) == 3
    assert second["runs"][0]["train_error"][:2] == first["runs"][0]["train_error"]


@pytest.mark.slow
def test_fig1_sweep_compares_rates_at_sweep_epochs_and_trains_the_winner_on(tmp_path, cache):
    from alexnet_kit.train.experiments import fig1

    x, y = _fig1_photos()
    cfg = dataclasses.replace(fig1.SIZES["tiny"], seeds=1, max_epochs=3, sweep_epochs=1, max_rates=3)
    winner, results, added = fig1.sweep(x, y, "tanh", [0.001, 0.002], cfg, torch.device("cpu"), log=lambda *a: None)
    assert len(results) == 3 and len(added) == 1  # two rates, the winner at an edge: one more, then the cap
    assert all(len(r["train_error"]) == 1 for r in results if not r["epochs_to_target"])
    best = fig1.best_of(results)
    assert winner.lr == best["lr"] and winner.errors[:1] == best["train_error"]
    assert len(winner.errors) == 3 or winner.reached  # trained on alone to max_epochs


def SIZES_UNCHANGED():
    from alexnet_kit.train.experiments import fig1

    return fig1.SIZES["tiny"].seeds == 2 and fig1.SIZES["tiny"].max_epochs == 3  # run() overrides must not leak


def test_cli_fig1_needs_two_rates_to_sweep(tmp_path, capsys):
    from alexnet_kit.cli import main

    assert main(["reproduce", "fig1", "--size", "tiny", "--lrs", "0.01", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "--lrs" in err and "two" in err and "\n" not in err
    assert not list(tmp_path.iterdir())


# ---- Ablations -------------------------------------------------------------------


def test_each_variant_changes_exactly_its_one_choice():
    from alexnet_kit.model import AlexNetConfig
    from alexnet_kit.train.experiments.ablations import variant_config

    base = AlexNetConfig(num_classes=10, conv_channels=(8, 16, 16, 16, 16), fc_features=32, input_size=64)
    expect = {"full": {}, "no_pca": {}, "no_lrn": {"lrn": False}, "no_overlap": {"overlapping_pool": False}, "no_dropout": {"dropout": 0.0}}
    for v, change in expect.items():
        a, b = base.to_dict(), variant_config(base, v).to_dict()
        assert {k: b[k] for k in a if a[k] != b[k]} == change


def test_no_pca_differs_from_full_only_by_one_rgb_offset_per_image_with_the_same_crops():
    """The ablations augment through the library (the loader's EpochBatches, augment.Finisher);
    no_pca is pca_std=0: the same draws, so the same crops and mirrors, and no colour offset."""
    from alexnet_kit.train.experiments import ablations
    from alexnet_kit.train.experiments.caltech import ArraySplit, rgb_statistics
    from alexnet_kit.train.loader import EpochBatches

    rng = np.random.default_rng(0)
    photos = rng.integers(0, 256, (6, 40, 40, 3), dtype=np.uint8)
    stats = rgb_statistics(photos)
    mean, std, vals, vecs = stats
    assert np.allclose(vecs.T @ vecs, np.eye(3), atol=1e-5) and (np.diff(vals) <= 0).all()
    cfg = dataclasses.replace(ablations.SIZES["tiny"], photo=40, crop=32, batch=6)
    fin = ablations.finisher(cfg, stats)
    split = ArraySplit(photos, np.zeros(6, np.int64))

    def batch(variant):
        return EpochBatches(split, batch=6, seed=3, epoch=1, crop=32, train=True, finisher=fin,
                            pca_std=ablations.pca_std(variant), drop_last=False)[0]

    noisy, _, d_full = batch("full")
    plain, _, d_plain = batch("no_pca")
    assert plain.shape == (6, 3, 32, 32)
    assert torch.equal(d_full[:, :3], d_plain[:, :3]) and d_full[:, 2].any() and not d_full[:, 2].all()  # same crops and mirrors
    assert (d_plain[:, 3:] == 0).all() and (d_full[:, 3:] != 0).all()
    # no_pca is the plain patch minus the mean image's same patch, over the channel std
    mean_hwc = mean.transpose(1, 2, 0)
    for i, (t, l, f) in enumerate(d_plain[:, :3].long().tolist()):
        ref = (photos[i, t:t + 32, l:l + 32].astype(np.float32) - mean_hwc[t:t + 32, l:l + 32]) / std
        ref = ref[:, ::-1] if f else ref
        assert np.allclose(plain[i].numpy().transpose(1, 2, 0), ref, atol=1e-4)
    diff = (noisy - plain) * torch.from_numpy(std)[:, None, None]
    per_image = diff.flatten(2)
    assert torch.allclose(per_image, per_image[:, :, :1].expand_as(per_image), atol=1e-4)  # constant per image and channel
    lam = vals / 255.0  # §4.1 P (alpha * lambda), lambda on the 0..1 scale, in 0..255 units
    expect = d_full[:, 3:].numpy() @ (vecs * lam[None, :]).T
    assert np.allclose(per_image[:, :, 0].numpy(), expect, atol=1e-3)
    assert diff.abs().max() > 0.01 and diff.abs().max() < 30  # a few grey levels, not hundreds


def test_ablation_evaluate_equals_a_direct_computation_of_top1_and_top5():
    from alexnet_kit.model import AlexNet, AlexNetConfig
    from alexnet_kit.preprocess import Preprocess
    from alexnet_kit.train.experiments import ablations

    torch.manual_seed(0)
    net = AlexNet(AlexNetConfig(num_classes=7, conv_channels=(8, 16, 16, 16, 16), fc_features=32, input_size=64, init="kaiming"))
    rng = np.random.default_rng(1)
    photos = rng.integers(0, 256, (13, 72, 72, 3), dtype=np.uint8)
    labels = rng.integers(0, 7, 13)
    prep = Preprocess(resize=72, crop=64, mean=photos.mean(0).transpose(2, 0, 1).astype(np.float32), std=(60.0, 60.0, 60.0))
    for crops in (1, 10):
        got = ablations.evaluate(net, photos, labels, prep, crops, "cpu", batch=5)
        assert net.training  # back to training mode
        net.eval()
        with torch.no_grad():  # §4.1: the softmax averaged over a photo's crops
            p = torch.softmax(net(prep.crops(photos, crops)), 1).reshape(13, crops, 7).mean(1).numpy()
        net.train()
        rank = np.argsort(-p, axis=1)
        top1 = 100 * np.mean(rank[:, 0] != labels)
        top5 = 100 * np.mean([y not in r[:5] for y, r in zip(labels, rank)])
        assert 0 < top5 < top1 < 100
        assert got == pytest.approx({"top1": top1, "top5": top5})


@pytest.mark.slow
def test_ablations_train_with_paper_sgd_and_the_fixed_schedule(monkeypatch, cache):
    """Every step is PaperSGD's (§5), at lr for three quarters of the epochs and lr/10 after."""
    shared("caltech101")
    from alexnet_kit.train.experiments import ablations
    from alexnet_kit.train.experiments.caltech import caltech_split, rgb_statistics
    from alexnet_kit.train.optim import PaperSGD

    steps = []
    real = PaperSGD.step

    def step(self, closure=None):  # the real step, counted
        steps.append(self.param_groups[0]["lr"])
        return real(self, closure)

    monkeypatch.setattr(PaperSGD, "step", step)
    cfg = dataclasses.replace(ablations.SIZES["tiny"], epochs=4, classes=2, per_class=6)
    split = caltech_split(cfg.classes, cfg.photo, per_class=cfg.per_class)
    r, model = ablations.train_variant("full", 0, split, rgb_statistics(split.train), cfg, torch.device("cpu"),
                                       log=lambda *a: None, progress=False)
    per_epoch = -(-len(split.train) // cfg.batch)  # every photo, the last batch short
    assert steps == [cfg.lr] * 3 * per_epoch + [cfg.lr / 10] * per_epoch
    assert [h["lr"] for h in r["history"]] == [cfg.lr] * 3 + [cfg.lr / 10]
    assert all(torch.isfinite(p).all() for p in model.parameters())


@pytest.fixture(scope="module")
def ablation_run(tmp_path_factory, cache):
    shared("caltech101")
    from alexnet_kit.train.experiments import ablations

    out = tmp_path_factory.mktemp("ablations")
    ablations.run(out, "tiny", seeds=2, epochs=1, variants=["full", "no_lrn"], log=lambda *a: None)
    return out


@pytest.mark.slow
def test_ablations_tiny_results_follow_from_the_runs(ablation_run):
    d = read_json(ablation_run / "ablations.json")
    read_png(ablation_run / "ablations.png")
    assert not list(ablation_run.glob("*partial*"))  # progress files go once the results are complete
    assert len(d["classes"]) == 3 and d["split"]["val"] > 0 and d["split"]["train"] > d["split"]["val"]
    assert {(r["variant"], r["seed"]) for r in d["runs"]} == {("full", 0), ("full", 1), ("no_lrn", 0), ("no_lrn", 1)}
    for r in d["runs"]:
        for proto in ("centre", "ten_crop"):
            assert 0 <= r[proto]["top1"] <= 100 and r[proto]["top5"] == 0  # 3 classes: top-5 always hits
        assert len(r["history"]) == 1
        assert r["config"]["lrn"] == (r["variant"] != "no_lrn")
    by = {(r["variant"], r["seed"]): r for r in d["runs"]}
    gaps = [by["no_lrn", s]["ten_crop"]["top1"] - by["full", s]["ten_crop"]["top1"] for s in (0, 1)]
    assert d["gain_of_paper_choice"]["no_lrn"]["top1"][0] == pytest.approx(np.mean(gaps))
    assert d["gain_of_paper_choice"]["no_lrn"]["top1"][1] == pytest.approx(np.std(gaps, ddof=1))
    cen = [by["full", s]["centre"]["top1"] - by["full", s]["ten_crop"]["top1"] for s in (0, 1)]
    assert d["gain_of_paper_choice"]["centre_crop"]["top1"][0] == pytest.approx(np.mean(cen))
    assert d["variants"]["full"]["ten_crop_top1"][0] == pytest.approx(np.mean([by["full", s]["ten_crop"]["top1"] for s in (0, 1)]))
    assert d["paper"]["no_lrn"]["top1"] == 1.4


@pytest.mark.slow
def test_ablations_save_a_loadable_model_that_lists_its_training_photos(ablation_run):
    from alexnet_kit.checkpoint import load_model

    net, meta = load_model(ablation_run / "caltech_full_seed0.safetensors")
    assert meta.trained and meta.config.num_classes == 3 and meta.config.input_size == 64
    assert meta.preprocess.resize == 72 and meta.preprocess.mean.shape == (3, 72, 72)
    assert all(f.endswith(".jpg") for f in meta.provenance["train_files"])


# ---- Figures 3 and 4 -------------------------------------------------------------


def test_colourfulness_is_zero_for_grey_kernels_and_high_for_one_colour():
    from alexnet_kit.train.experiments.fig3 import colourfulness

    rng = np.random.default_rng(0)
    grey = np.repeat(rng.standard_normal((4, 1, 11, 11)), 3, axis=1)
    red = np.zeros((4, 3, 11, 11))
    red[:, 0] = rng.standard_normal((4, 11, 11))
    assert np.allclose(colourfulness(grey), 0, atol=1e-9)
    assert (colourfulness(red) > 0.6).all() and (colourfulness(red) <= 1).all()


@pytest.mark.slow
def test_fig3_draws_every_kernel_of_the_model(ablation_run):
    from alexnet_kit.train.experiments import fig3

    fig3.run(ablation_run, ablation_run / "caltech_full_seed0.safetensors", log=lambda *a: None)
    d = read_json(ablation_run / "fig3_kernels.json")
    read_png(ablation_run / "fig3_kernels.png")
    assert d["kernels"] == 8 and d["kernel_shape"] == [3, 11, 11] and d["towers"] == 2
    assert [t["kernels"] for t in d["tower_colourfulness"]] == [4, 4]
    assert len(d["kernel_colourfulness"]) == 8 and all(0 <= c <= 1 for c in d["kernel_colourfulness"])
    assert "train_files" not in d["provenance"]


def test_nearest_is_euclidean_and_sorted():
    from alexnet_kit.train.experiments.fig4 import nearest

    rng = np.random.default_rng(0)
    q, g = rng.standard_normal((3, 16)).astype(np.float32), rng.standard_normal((20, 16)).astype(np.float32)
    idx, dist = nearest(q, g, 4)
    brute = np.linalg.norm(q[:, None] - g[None], axis=2)
    assert (idx == np.argsort(brute, axis=1)[:, :4]).all()
    assert np.allclose(dist, np.sort(brute, axis=1)[:, :4], atol=1e-4)


@pytest.mark.slow
def test_fig4_top5_and_neighbours_from_the_models_training_photos(ablation_run):
    from alexnet_kit.checkpoint import load_model
    from alexnet_kit.train.experiments import fig4

    fig4.run(ablation_run, ablation_run / "caltech_full_seed0.safetensors", size="tiny", queries=3, neighbours=4, log=lambda *a: None)
    d = read_json(ablation_run / "fig4_neighbours.json")
    read_png(ablation_run / "fig4_neighbours.png")
    _, meta = load_model(ablation_run / "caltech_full_seed0.safetensors")
    train = set(meta.provenance["train_files"])
    assert d["gallery"]["photos"] == len(train)
    assert len(d["queries"]) == 3 and len({q["truth"] for q in d["queries"]}) == 3
    for q in d["queries"]:
        assert q["query"] not in train  # a held-out photo
        p = [t["p"] for t in q["top5"]]
        assert len(p) == 3 and p == sorted(p, reverse=True) and sum(p) == pytest.approx(1, abs=1e-4)
        dist = [n["distance"] for n in q["neighbours"]]
        assert len(dist) == 4 and dist == sorted(dist) and all(n["file"] in train for n in q["neighbours"])
    assert d["feature_dim"] == 32


# ---- CLI -------------------------------------------------------------------------


def test_cli_reproduce_fig3_on_a_checkpoint(tmp_path, tiny_checkpoint):
    from alexnet_kit.cli import main

    assert main(["reproduce", "fig3", "--model", str(tiny_checkpoint), "--out", str(tmp_path)]) == 0
    d = read_json(tmp_path / "fig3_kernels.json")
    assert d["kernels"] == 16 and d["trained"] is False
    read_png(tmp_path / "fig3_kernels.png")


def test_cli_reproduce_user_errors_are_one_line(tmp_path, capsys):
    from alexnet_kit.cli import main

    assert main(["reproduce", "fig3", "--model", str(tmp_path / "missing.safetensors"), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "missing.safetensors" in err and "\n" not in err
    assert main(["reproduce", "ablations", "--variants", "full,no_magic", "--out", str(tmp_path)]) == 2
    assert "no_magic" in capsys.readouterr().err
    assert main(["reproduce", "fig1", "--seeds", "0", "--out", str(tmp_path)]) == 2
    assert not list(tmp_path.iterdir())


@pytest.mark.slow
def test_an_interrupted_ablation_keeps_its_finished_runs(tmp_path, cache):
    shared("caltech101")
    from alexnet_kit.train.experiments import ablations
    from alexnet_kit.train.experiments.caltech import caltech_split, rgb_statistics

    cfg = dataclasses.replace(ablations.SIZES["tiny"], epochs=1, classes=2, per_class=6)
    split = caltech_split(cfg.classes, cfg.photo, per_class=cfg.per_class)
    stats = rgb_statistics(split.train)
    first = ablations.seed_study(0, ["no_dropout"], split, stats, cfg, "cpu", tmp_path, log=lambda *a: None)
    assert (tmp_path / "ablations.partial.seed0.json").exists()
    said = []
    again = ablations.seed_study(0, ["no_dropout"], split, stats, cfg, "cpu", tmp_path, log=said.append)
    assert json.loads(json.dumps(again)) == json.loads(json.dumps(first)) and "kept from an interrupted run" in said[0]
    other = dataclasses.replace(cfg, lr=0.02)  # other settings: nothing is kept
    said.clear()
    ablations.seed_study(0, ["no_dropout"], split, stats, other, "cpu", tmp_path, log=said.append)
    assert not any("kept" in s for s in said)
    progress = tmp_path / "ablations.partial.seed0.json"
    progress.write_text(json.dumps({**json.loads(progress.read_text()), "stream": ablations.STREAM - 1}))
    said.clear()
    ablations.seed_study(0, ["no_dropout"], split, stats, other, "cpu", tmp_path, log=said.append)
    assert not any("kept" in s for s in said)  # runs of an older data stream are not resumed


@pytest.mark.slow
def test_report_prints_the_ablation_table_from_the_json(ablation_run, capsys):
    from alexnet_kit.train.experiments import report

    assert report.main([str(ablation_run)]) == 0
    text = capsys.readouterr().out
    d = json.loads((ablation_run / "ablations.json").read_text())
    m, s = d["gain_of_paper_choice"]["no_lrn"]["top1"]
    assert "### ablations" in text and "| no_lrn | " in text and f"{m:.1f} ± {s:.1f}" in text
