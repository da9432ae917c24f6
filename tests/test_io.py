"""Tests for spft.data.io: decoding every supported on-disk form (and npy cache rows) into mode "L" or "RGB"."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from spft.data.io import IMAGE_SUFFIXES, load_image, parse_row_ref, row_ref


def test_8bit_png_grey_and_rgb(tmp_path):
    arr = np.arange(256, dtype=np.uint8).reshape(16, 16)
    Image.fromarray(arr).save(tmp_path / "g.png")
    grey = load_image(tmp_path / "g.png")
    assert grey.mode == "L"
    np.testing.assert_array_equal(np.asarray(grey), arr)
    rgb = load_image(str(tmp_path / "g.png"), color="rgb")
    assert rgb.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(rgb)[..., 1], arr)


def test_16bit_png_is_scaled_over_full_range_not_clipped(tmp_path):
    arr = np.array([[0, 32768, 65535]], dtype=np.uint16)
    Image.fromarray(arr).save(tmp_path / "d.png")
    out = np.asarray(load_image(tmp_path / "d.png"))
    assert out.dtype == np.uint8
    assert out[0, 0] == 0 and out[0, 2] == 255 and abs(int(out[0, 1]) - 128) <= 1


def test_16bit_png_dark_values_stay_dark(tmp_path):
    arr = np.array([[0, 200, 255]], dtype=np.uint16)  # a 16-bit file whose values happen to be small
    Image.fromarray(arr).save(tmp_path / "dark.png")
    assert np.asarray(load_image(tmp_path / "dark.png")).max() <= 1


def test_mode_i_above_255_uses_16bit_range(tmp_path):
    arr = np.array([[0, 65535]], dtype=np.int32)
    Image.fromarray(arr).save(tmp_path / "i.tif")
    np.testing.assert_array_equal(np.asarray(load_image(tmp_path / "i.tif")), [[0, 255]])


def test_rgba_drops_alpha(tmp_path):
    arr = np.zeros((4, 4, 4), dtype=np.uint8)
    arr[..., 0], arr[..., 3] = 200, 0  # fully transparent red: alpha must be ignored, not composited
    Image.fromarray(arr, mode="RGBA").save(tmp_path / "a.png")
    grey = load_image(tmp_path / "a.png")
    assert grey.mode == "L" and np.asarray(grey).max() > 0
    rgb = load_image(tmp_path / "a.png", color="rgb")
    assert rgb.mode == "RGB" and np.asarray(rgb)[0, 0, 0] == 200


def test_la_and_palette(tmp_path):
    Image.new("LA", (4, 4), (90, 10)).save(tmp_path / "la.png")
    assert np.asarray(load_image(tmp_path / "la.png")).max() == 90
    Image.new("RGB", (4, 4), (0, 0, 255)).convert("P").save(tmp_path / "p.png")
    assert load_image(tmp_path / "p.png").mode == "L"
    assert tuple(np.asarray(load_image(tmp_path / "p.png", "rgb"))[0, 0]) == (0, 0, 255)


def test_rgb_to_grey_and_jpeg(tmp_path):
    Image.new("RGB", (8, 8), (120, 120, 120)).save(tmp_path / "c.jpg", quality=95)
    grey = load_image(tmp_path / "c.jpg")
    assert grey.mode == "L" and abs(int(np.asarray(grey).mean()) - 120) <= 2
    assert load_image(tmp_path / "c.jpg", color="rgb").mode == "RGB"


def test_missing_file_names_path(tmp_path):
    path = tmp_path / "nope.png"
    with pytest.raises(FileNotFoundError, match="nope.png"):
        load_image(path)


def test_corrupt_file_is_value_error_naming_path(tmp_path):
    path = tmp_path / "x.png"
    path.write_bytes(b"not a png")
    with pytest.raises(ValueError, match=r"cannot decode image .*x\.png"):
        load_image(path)


def test_truncated_png_is_value_error(tmp_path):
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)).save(tmp_path / "t.png")
    data = (tmp_path / "t.png").read_bytes()
    (tmp_path / "t.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="cannot decode image"):
        load_image(tmp_path / "t.png")


def test_bad_color_and_suffixes(tmp_path):
    Image.new("L", (2, 2)).save(tmp_path / "g.png")
    with pytest.raises(ValueError, match="grey"):
        load_image(tmp_path / "g.png", color="bgr")
    assert ".png" in IMAGE_SUFFIXES and ".jpeg" in IMAGE_SUFFIXES


def test_every_16bit_value_maps_as_round_v_times_255_over_65535(tmp_path):
    """The table lookup used for 16-bit data gives the same bytes as the float formula, for all 65536 values."""
    arr = np.arange(65536, dtype=np.uint16).reshape(256, 256)
    Image.fromarray(arr).save(tmp_path / "all.png")
    expected = np.clip(np.rint(arr.astype(np.float64) * (255.0 / 65535.0)), 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(np.asarray(load_image(tmp_path / "all.png")), expected)
    big_endian = Image.frombytes("I;16B", (256, 256), arr.astype(">u2").tobytes())
    from spft.data.io import _to_mode

    np.testing.assert_array_equal(np.asarray(_to_mode(big_endian, "grey")), expected)


@pytest.mark.filterwarnings("ignore:The image decoding:DeprecationWarning")
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_torchvision_png_decoder_gives_the_same_pixels_as_pillow(tmp_path, dtype):
    """torchvision.io.decode_png was measured as an alternative decoder: it agrees with Pillow bit for bit (it is
    not used: no faster, and deprecated since torchvision 0.29; see spft.data.io)."""
    import torchvision.io as torchvision_io  # a hard dependency of spft: no skip
    peak = np.iinfo(dtype).max
    arr = np.random.default_rng(3).integers(0, peak, (96, 80), endpoint=True).astype(dtype)
    Image.fromarray(arr).save(tmp_path / "x.png")
    decoded = torchvision_io.decode_png(torchvision_io.read_file(str(tmp_path / "x.png")),
                                        torchvision_io.ImageReadMode.UNCHANGED)
    with Image.open(tmp_path / "x.png") as image:
        np.testing.assert_array_equal(decoded[0].numpy(), np.asarray(image))


def test_npy_row_reference(tmp_path):
    rows = np.lib.format.open_memmap(tmp_path / "a.npy", mode="w+", dtype=np.uint8, shape=(3, 4, 5))
    rows[:] = np.arange(3, dtype=np.uint8)[:, None, None] * 10
    rows.flush()
    ref = row_ref(tmp_path / "a.npy", 2)
    assert parse_row_ref(ref) == (tmp_path / "a.npy", 2)
    assert parse_row_ref(tmp_path / "a.png") is None and parse_row_ref("x.npy::-1") is None
    grey = load_image(ref)
    assert grey.mode == "L" and grey.size == (5, 4) and np.asarray(grey).max() == 20
    assert load_image(ref, "rgb").mode == "RGB"
    real = tmp_path / "odd.npy::1"  # a real file with such a name is read as a file
    Image.new("L", (2, 2), 9).save(real, format="PNG")
    assert np.asarray(load_image(real)).max() == 9
    with pytest.raises(FileNotFoundError, match="missing.npy"):
        load_image(tmp_path / "missing.npy::0")
