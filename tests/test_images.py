"""The one decoder: every readable format and colour mode, and every way a file can be unusable."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from tlcli.data.images import ImageDecodeError, decode_bytes, decode_image, extension_matches

RED, BLUE, WHITE = (200, 30, 30), (20, 40, 220), (255, 255, 255)


def halves(height: int = 40, width: int = 60) -> np.ndarray:
    """Left half red, right half blue: shows orientation and colour at a glance."""
    pixels = np.zeros((height, width, 3), np.uint8)
    pixels[:, : width // 2] = RED
    pixels[:, width // 2 :] = BLUE
    return pixels


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def close(pixel, expected, tolerance=12) -> bool:
    return bool(np.all(np.abs(np.asarray(pixel, int) - np.asarray(expected, int)) <= tolerance))


def sixteen_bit_ramp() -> Image.Image:
    """16-bit grayscale: left half 80% of full scale, right half 20%."""
    ramp = np.full((40, 60), 13107, np.uint16)
    ramp[:, :30] = 52428
    image = Image.fromarray(ramp)
    assert image.mode == "I;16"
    return image


def with_alpha() -> Image.Image:
    rgba = np.dstack([halves(), np.full((40, 60), 255, np.uint8)])
    rgba[20:, :, 3] = 0  # bottom half fully transparent
    return Image.fromarray(rgba, "RGBA")


def animated() -> bytes:
    first, second = Image.fromarray(halves()), Image.fromarray(halves()[:, ::-1].copy())
    return encode(first, "GIF", save_all=True, append_images=[second], duration=100, loop=0)


def exif_rotated(orientation: int = 6) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(Image.fromarray(halves()), "JPEG", quality=95, exif=exif.tobytes())


# name -> (bytes, format, mode, expected (top-left, top-right, bottom-left) after decoding to 20x30 RGB)
LUMA_RED, LUMA_BLUE = 81, 55  # ITU-R 601 luma of RED and BLUE
READABLE = {
    "jpeg": (lambda: encode(Image.fromarray(halves()), "JPEG", quality=95), "JPEG", "RGB", (RED, BLUE, RED)),
    "progressive jpeg": (
        lambda: encode(Image.fromarray(halves()), "JPEG", quality=95, progressive=True),
        "JPEG",
        "RGB",
        (RED, BLUE, RED),
    ),
    "cmyk jpeg": (
        lambda: encode(Image.fromarray(halves()).convert("CMYK"), "JPEG", quality=95),
        "JPEG",
        "CMYK",
        (RED, BLUE, RED),
    ),
    "grayscale jpeg": (
        lambda: encode(Image.fromarray(halves()).convert("L"), "JPEG", quality=95),
        "JPEG",
        "L",
        ((LUMA_RED,) * 3, (LUMA_BLUE,) * 3, (LUMA_RED,) * 3),
    ),
    # Orientation 6 = rotate 90 degrees clockwise: the red left half becomes the top.
    "exif-rotated jpeg": (exif_rotated, "JPEG", "RGB", (RED, RED, BLUE)),
    "png": (lambda: encode(Image.fromarray(halves()), "PNG"), "PNG", "RGB", (RED, BLUE, RED)),
    "grayscale png": (
        lambda: encode(Image.fromarray(halves()).convert("L"), "PNG"),
        "PNG",
        "L",
        ((LUMA_RED,) * 3, (LUMA_BLUE,) * 3, (LUMA_RED,) * 3),
    ),
    "palette png": (lambda: encode(Image.fromarray(halves()).convert("P"), "PNG"), "PNG", "P", (RED, BLUE, RED)),
    "rgba png": (lambda: encode(with_alpha(), "PNG"), "PNG", "RGBA", (RED, BLUE, WHITE)),
    "grayscale+alpha png": (
        lambda: encode(with_alpha().convert("LA"), "PNG"),
        "PNG",
        "LA",
        ((LUMA_RED,) * 3, (LUMA_BLUE,) * 3, WHITE),
    ),
    # 16 bits are scaled to 8 (80% -> 204, 20% -> 51), not clipped to 255.
    "16-bit png": (lambda: encode(sixteen_bit_ramp(), "PNG"), "PNG", "I;16", ((204,) * 3, (51,) * 3, (204,) * 3)),
    "16-bit tiff": (lambda: encode(sixteen_bit_ramp(), "TIFF"), "TIFF", "I;16", ((204,) * 3, (51,) * 3, (204,) * 3)),
    "animated gif (first frame)": (animated, "GIF", "P", (RED, BLUE, RED)),
    "bmp": (lambda: encode(Image.fromarray(halves()), "BMP"), "BMP", "RGB", (RED, BLUE, RED)),
    "webp": (lambda: encode(Image.fromarray(halves()), "WEBP", quality=95), "WEBP", "RGB", (RED, BLUE, RED)),
    "webp with alpha": (lambda: encode(with_alpha(), "WEBP", lossless=True), "WEBP", "RGBA", (RED, BLUE, WHITE)),
    "tiff": (lambda: encode(Image.fromarray(halves()), "TIFF"), "TIFF", "RGB", (RED, BLUE, RED)),
}


@pytest.mark.parametrize("name", list(READABLE))
def test_every_readable_format_decodes_to_the_right_pixels(name):
    make, fmt, mode, (top_left, top_right, bottom_left) = READABLE[name]
    pixels, info = decode_bytes(make(), (20, 30), 3)
    assert pixels.shape == (20, 30, 3) and pixels.dtype == np.uint8
    assert (info.format, info.mode) == (fmt, mode)
    assert close(pixels[3, 3], top_left), pixels[3, 3]
    assert close(pixels[3, 26], top_right), pixels[3, 26]
    assert close(pixels[17, 3], bottom_left), pixels[17, 3]


def test_info_describes_the_file():
    _, info = decode_bytes(exif_rotated(), (8, 8))
    assert info.exif_rotated and (info.width, info.height) == (60, 40)
    _, info = decode_bytes(animated(), (8, 8))
    assert info.frames == 2 and info.conversion == "palette expanded"
    assert decode_bytes(encode(sixteen_bit_ramp(), "PNG"), (8, 8))[1].conversion == "16-bit scaled to 8-bit"
    assert decode_bytes(encode(with_alpha(), "PNG"), (8, 8))[1].conversion == "transparency composited on white"
    assert (
        decode_bytes(encode(Image.fromarray(halves()).convert("CMYK"), "JPEG"), (8, 8))[1].conversion
        == "CMYK converted to RGB"
    )
    gray = decode_bytes(encode(Image.fromarray(halves()).convert("L"), "PNG"), (8, 8))[1]
    assert gray.conversion == "grayscale replicated to 3 channels" and gray.conversion_to(1) is None
    plain = decode_bytes(encode(Image.fromarray(halves()), "PNG"), (8, 8))[1]
    assert plain.conversion is None and plain.conversion_to(1) == "converted to grayscale"
    assert plain.content_hash == decode_bytes(encode(Image.fromarray(halves()), "PNG"), (16, 16))[1].content_hash


def test_grayscale_is_replicated_to_three_channels_and_rgb_reduced_to_one():
    gray = encode(Image.fromarray(halves()).convert("L"), "PNG")
    rgb_pixels, _ = decode_bytes(gray, (20, 30), 3)
    assert rgb_pixels.shape == (20, 30, 3)
    assert np.array_equal(rgb_pixels[..., 0], rgb_pixels[..., 1]) and np.array_equal(
        rgb_pixels[..., 1], rgb_pixels[..., 2]
    )
    one, _ = decode_bytes(encode(Image.fromarray(halves()), "PNG"), (20, 30), 1)
    assert one.shape == (20, 30, 1) and abs(int(one[3, 3, 0]) - LUMA_RED) <= 2


def test_grayscale_input_is_replicated_to_rgb_inside_the_model():
    """data.color_mode: grayscale on a keras.applications base: the `to_rgb` layer copies the channel."""
    import keras

    from tlcli.config import load_config
    from tlcli.modeling.build import build_model

    config = load_config(
        {
            "data": {"dir": ".", "image_size": 32, "color_mode": "grayscale"},
            "base": {"name": "MobileNet", "weights": "none", "args": {"alpha": 0.25}},
        }
    )
    model, info = build_model(config, 2)
    assert model.input_shape == (None, 32, 32, 1) and info.channels == 1
    to_rgb = keras.Model(model.input, model.get_layer("to_rgb").output)
    image = np.random.default_rng(0).integers(0, 255, (1, 32, 32, 1)).astype("float32")
    out = np.asarray(to_rgb(image))
    assert out.shape == (1, 32, 32, 3)
    for channel in range(3):
        assert np.array_equal(out[..., channel], image[..., 0])


def test_extension_matches():
    assert extension_matches("a/b.JPG", "JPEG") and extension_matches("x.jpeg", "MPO")
    assert not extension_matches("photo.jpg", "PNG") and not extension_matches("photo.jpg", "BMP")
    assert extension_matches("x.tif", "TIFF") and not extension_matches("x.png", "GIF")


# ----------------------------------------------------------------------------- unusable files

JPEG = encode(Image.fromarray(halves(200, 200)), "JPEG", quality=90)
UNREADABLE = {
    "zero bytes": (b"", "empty file"),
    "truncated jpeg (scan data cut)": (JPEG[: len(JPEG) * 2 // 3], "truncated"),
    "truncated jpeg (header cut)": (JPEG[:40], "truncated"),
    "truncated png": (encode(Image.fromarray(halves()), "PNG")[:60], "truncated"),
    "jpeg header, garbage after": (b"\xff\xd8\xff\xe0" + bytes(100), "JPEG"),
    "text named .jpg": (b"hello, I am a text file\n" * 3, "not an image"),
    "html error page": (b"<!DOCTYPE html><html><body>404</body></html>", "not an image"),
    "heic": (b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(64), "unsupported format (HEIC)"),
    "pdf": (b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n" + bytes(64), "unsupported format (PDF)"),
    "svg": (
        b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>',
        "unsupported format (SVG)",
    ),
    "random bytes": (np.random.default_rng(0).integers(0, 256, 2000, dtype=np.uint8).tobytes(), "not an image"),
}


@pytest.mark.parametrize("name", list(UNREADABLE))
def test_unusable_files_raise_one_decode_error_with_a_reason(name):
    data, words = UNREADABLE[name]
    with pytest.raises(ImageDecodeError) as caught:
        decode_bytes(data, (16, 16))
    assert words in caught.value.reason
    assert "\n" not in caught.value.reason


def test_a_file_that_cannot_be_read_is_reported_and_not_remembered(tmp_path):
    with pytest.raises(ImageDecodeError) as caught:
        decode_image(tmp_path / "missing.jpg", (8, 8))
    assert caught.value.reason.startswith("cannot read file") and not caught.value.cacheable
    with pytest.raises(ImageDecodeError) as caught:
        decode_image(tmp_path, (8, 8))  # a folder named like an image
    assert caught.value.reason == "not a regular file (a folder)" and not caught.value.cacheable


def test_decompression_bomb_guard_stays_on(monkeypatch):
    """A huge image is reported, never loaded: above the limit (Pillow warns) and above twice it (Pillow raises)."""
    data = encode(Image.fromarray(halves(100, 100)), "PNG")  # 10,000 pixels
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 7000)  # between 1x and 2x: our own check
    with pytest.raises(ImageDecodeError, match="image too large"):
        decode_bytes(data, (8, 8))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # beyond 2x: Pillow's DecompressionBombError
    with pytest.raises(ImageDecodeError, match="image too large"):
        decode_bytes(data, (8, 8))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)  # the guard switched off by a user must not crash us
    assert decode_bytes(data, (8, 8))[0].shape == (8, 8, 3)


def test_unexpected_pillow_errors_never_escape(monkeypatch):
    data = encode(Image.fromarray(halves()), "BMP")

    def broken_load(self):
        raise IndexError("list index out of range")

    monkeypatch.setattr(Image.Image, "load", broken_load)
    with pytest.raises(ImageDecodeError, match="corrupt image \\(IndexError"):
        decode_bytes(data, (8, 8))


def test_a_file_is_read_whole_even_when_it_grows_after_the_stat(tmp_path, monkeypatch):
    """read_image_file asks for the size stat reported (not a cap-sized buffer per file), then for what the file grew
    by, up to the cap."""
    import os

    from tlcli.data import images

    path = tmp_path / "growing.png"
    data = encode(Image.fromarray(halves()), "PNG")
    path.write_bytes(data)
    assert images.read_image_file(path, max_bytes=len(data)) == data  # exactly the cap: accepted
    real_stat = os.stat

    def stat_before_the_last_write(target, *args, **kwargs):  # the file as stat saw it, before a writer appended to it
        seen = real_stat(target, *args, **kwargs)
        return os.stat_result(
            (
                seen.st_mode,
                seen.st_ino,
                seen.st_dev,
                seen.st_nlink,
                seen.st_uid,
                seen.st_gid,
                10,
                seen.st_atime,
                seen.st_mtime,
                seen.st_ctime,
            )
        )

    monkeypatch.setattr(images.os, "stat", stat_before_the_last_write)
    assert images.read_image_file(path) == data
    with pytest.raises(ImageDecodeError, match="file too large \\(over data.max_file_mb") as caught:
        images.read_image_file(path, max_bytes=len(data) - 1)
    assert not caught.value.cacheable
