"""Every kind of real-world photo loads as the right RGB pixels; broken files fail in one line."""
import numpy as np
import pytest

from alexnet_kit.errors import ImageError
from alexnet_kit.images import load_square, open_image, square_crop_resize

from badinput import make_corpus


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_corpus(tmp_path_factory.mktemp("corpus"))


def test_awkward_photos_load_as_their_rgb_reference(corpus):
    good, _ = corpus
    for path, reference in good.items():
        got = load_square(path).astype(int)
        want = square_crop_resize(reference).astype(int)
        assert got.shape == (256, 256, 3), path.name
        lossy = path.suffix == ".jpg"
        assert np.abs(got - want).mean() < (4 if lossy else 0.01), path.name


def test_broken_files_raise_one_line_naming_the_file(corpus):
    _, bad = corpus
    for path, word in bad.items():
        with pytest.raises(ImageError) as err:
            load_square(path)
        msg = str(err.value)
        assert msg.startswith(str(path)), msg
        assert word in msg, msg
        assert "\n" not in msg


def test_directory_and_bytes_sources(tmp_path, corpus):
    with pytest.raises(ImageError, match="directory"):
        open_image(tmp_path)
    good, _ = corpus
    path = next(iter(good))
    assert np.array_equal(load_square(path.read_bytes()), load_square(path))
    with pytest.raises(ImageError, match="empty"):
        open_image(b"")


def test_short_side_to_256_then_centre_crop():
    """§2: rescale so the short side is 256, crop the central 256x256 patch."""
    from PIL import Image

    # left third red, middle green, right third blue, 768x256: only green survives
    a = np.zeros((256, 768, 3), np.uint8)
    a[:, :256, 0] = 255; a[:, 256:512, 1] = 255; a[:, 512:, 2] = 255
    out = square_crop_resize(Image.fromarray(a))
    assert out.shape == (256, 256, 3)
    assert (out[:, 2:-2, 1] == 255).all() and (out[:, 2:-2, [0, 2]] == 0).all()
    # a 512x1024 portrait scales by 1/2 and keeps its vertical middle
    b = np.zeros((1024, 512, 3), np.uint8); b[256:768] = 200
    out = square_crop_resize(Image.fromarray(b))
    assert (out[2:-2] == 200).all()


def test_jpeg_draft_decoding_stays_close_to_full_decode(tmp_path):
    from PIL import Image

    src = Image.open(make_corpus.__globals__["EXAMPLE"]).convert("RGB").resize((1600, 1200))
    p = tmp_path / "big.jpg"
    src.save(p, quality=95)
    fast = load_square(p).astype(int)
    full = square_crop_resize(Image.open(p).convert("RGB")).astype(int)
    assert np.abs(fast - full).mean() < 3


def test_resize_mode_is_an_explicit_argument_and_preprocess_load_applies_it():
    from helpers import EXAMPLES

    from alexnet_kit.images import warp_resize
    from alexnet_kit.preprocess import Preprocess

    path = EXAMPLES / "fish-bike.jpg"
    crop, warp = load_square(path, 64), load_square(path, 64, mode="warp")
    assert np.array_equal(crop, load_square(path, 64, mode="crop"))
    assert np.array_equal(warp, warp_resize(open_image(path, min_size=64), 64))
    assert not np.array_equal(crop, warp)
    pre = Preprocess(resize=64, crop=56, resize_mode="warp")
    assert type(pre.resize) is int and f"{pre.resize}" == "64"
    assert np.array_equal(pre.load(path), warp)
    assert np.array_equal(Preprocess(resize=64, crop=56).load(path), crop)
    with pytest.raises(ValueError, match="resize mode"):
        load_square(path, 64, mode="squash")
    with pytest.raises(ValueError, match="resize mode"):
        Preprocess(resize_mode="squash")
