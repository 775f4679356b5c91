"""Decoding one image file into the pixels the model sees.

Train, evaluate, predict and check all decode through `decode_image`, so a
photo is converted the same way everywhere. Pillow is used rather than
`tf.io.decode_image` because it applies EXIF orientation and reads every
common format and colour mode (CMYK, palette, RGBA, 16-bit); it releases the
GIL while decoding and resizing, so a thread pool decodes in parallel.

Conversions (documented in the README): EXIF orientation is applied;
transparency is composited on white; palette images are expanded; CMYK is
converted to RGB; 16-bit images are scaled to 8 bits; animated images use
their first frame; then the image is resized (bilinear, aspect ratio not
kept, as Keras's `image_dataset_from_directory` does) and converted to RGB
or grayscale.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from tlcli.config.schema import DEFAULT_MAX_FILE_MB

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff"})

DEFAULT_MAX_BYTES = int(DEFAULT_MAX_FILE_MB * 1_000_000)  # files larger are refused unread (`data.max_file_mb`)

# Bump when decoding changes what a file yields: screening caches (tlcli.data.screening)
# keyed on it then re-decode instead of trusting an old verdict.
DECODER_VERSION = 2

# Pillow's decompression-bomb guard stays on; we turn its warning (between 1x
# and 2x the limit) into our own error below instead of loading the image.
warnings.simplefilter("ignore", Image.DecompressionBombWarning)

_FORMAT_EXTENSIONS = {
    "JPEG": {".jpg", ".jpeg"},
    "PNG": {".png"},
    "GIF": {".gif"},
    "BMP": {".bmp"},
    "WEBP": {".webp"},
    "TIFF": {".tif", ".tiff"},
    "MPO": {".jpg", ".jpeg"},  # multi-picture JPEGs from some cameras
}


class ImageDecodeError(Exception):
    """A file that cannot be used as an image; `reason` is short and human.

    `cacheable` is False for failures that may go away without the file
    changing (permissions, I/O errors), so screening never remembers them.
    """

    def __init__(self, reason: str, cacheable: bool = True):
        self.reason = reason
        self.cacheable = cacheable
        super().__init__(reason)


@dataclass(frozen=True)
class ImageInfo:
    """What decoding found out about a file (used by `tlcli check`)."""

    format: str
    mode: str
    width: int
    height: int
    exif_rotated: bool
    frames: int
    content_hash: str

    @property
    def conversion(self) -> str | None:
        """How the colour mode is converted for an RGB model, or None for plain RGB."""
        return self.conversion_to(3)

    def conversion_to(self, channels: int) -> str | None:
        """How the colour mode is converted for `channels` (3: RGB, 1: grayscale), or None."""
        if channels == 1:
            if self.mode == "L":
                return None
            if self.mode in ("RGB", "CMYK", "YCbCr"):
                return "converted to grayscale"
        elif self.mode == "L":
            return "grayscale replicated to 3 channels"
        return _CONVERSIONS.get(self.mode)


_CONVERSIONS = {
    "1": "1-bit expanded to 8-bit",
    "P": "palette expanded",
    "PA": "palette with transparency composited on white",
    "RGBA": "transparency composited on white",
    "LA": "transparency composited on white",
    "CMYK": "CMYK converted to RGB",
    "YCbCr": "YCbCr converted to RGB",
    "I;16": "16-bit scaled to 8-bit",
    "I;16B": "16-bit scaled to 8-bit",
    "I;16L": "16-bit scaled to 8-bit",
    "I": "32-bit integer scaled to 8-bit",
    "F": "floating point clipped to 8-bit",
}


def extension_matches(path: str | Path, image_format: str) -> bool:
    """Whether the file's extension is one its actual format uses (a PNG named `.jpg` is not)."""
    return Path(path).suffix.lower() in _FORMAT_EXTENSIONS.get(image_format, {Path(path).suffix.lower()})


def decode_image(
    path: str | Path, size: tuple[int, int], channels: int = 3, max_bytes: int = DEFAULT_MAX_BYTES
) -> tuple[np.ndarray, ImageInfo]:
    """Read, decode and resize one image file.

    Args:
        path: the image file.
        size: (height, width) of the result.
        channels: 3 for RGB, 1 for grayscale.
        max_bytes: files larger than this are refused unread (`data.max_file_mb`).

    Returns:
        A uint8 array of shape (height, width, channels), and what was found.

    Raises:
        ImageDecodeError: the file is empty, not an image, truncated, corrupt,
            too large, or cannot be read; its `reason` says which.
    """
    return decode_bytes(read_image_file(path, max_bytes), size, channels)


def read_image_file(path: str | Path, max_bytes: int = DEFAULT_MAX_BYTES) -> bytes:
    """The bytes of an image file: the one place every command reads an image from disk.

    Only a regular file is read (checked with `stat` before `open`: opening a
    FIFO already blocks, and a device such as /dev/zero never ends), and only
    up to `max_bytes`, so no file can hang a command or exhaust its memory.

    Raises:
        ImageDecodeError: not a regular file, larger than `max_bytes`, or
            unreadable (not remembered by screening: each may change without
            the file's size or date changing, or depends on the cap).
    """
    try:
        info = os.stat(path)
        if not stat.S_ISREG(info.st_mode):
            raise ImageDecodeError(f"not a regular file ({_file_kind(info.st_mode)})", cacheable=False)
        if info.st_size > max_bytes:
            raise ImageDecodeError(
                f"file too large ({info.st_size / 1e6:.1f} MB; the limit is data.max_file_mb = {max_bytes / 1e6:g})",
                cacheable=False,
            )
        with open(path, "rb") as stream:
            # Ask for the size stat saw (read(n) allocates n bytes up front: a cap-sized buffer per file
            # costs more than the reading), then for whatever the file grew by since, up to the cap.
            data = stream.read(info.st_size + 1)
            if len(data) > info.st_size:
                data += stream.read(max_bytes + 1 - len(data))
    except OSError as exc:
        raise ImageDecodeError(f"cannot read file ({exc.strerror or exc})", cacheable=False) from None
    if len(data) > max_bytes:  # it grew after the stat
        raise ImageDecodeError(f"file too large (over data.max_file_mb = {max_bytes / 1e6:g} MB)", cacheable=False)
    return data


def _file_kind(mode: int) -> str:
    kinds = (
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISDIR, "a folder"),
    )
    return next((name for test, name in kinds if test(mode)), "not a file")


def decode_bytes(
    data: bytes, size: tuple[int, int], channels: int = 3, content_hash: str | None = None
) -> tuple[np.ndarray, ImageInfo]:
    """`decode_image` on bytes already read (so callers can hash them once)."""
    if not data:
        raise ImageDecodeError("empty file (0 bytes)")
    content_hash = content_hash or hashlib.sha256(data).hexdigest()  # callers that already hashed pass it
    height, width = size
    try:
        image = Image.open(io.BytesIO(data))
        image_format = image.format or "unknown"
        if Image.MAX_IMAGE_PIXELS and image.width * image.height > Image.MAX_IMAGE_PIXELS:
            raise ImageDecodeError(
                f"image too large ({image.width}x{image.height} pixels; Pillow's decompression-bomb limit is "
                f"{Image.MAX_IMAGE_PIXELS})"
            )
        frames = getattr(image, "n_frames", 1)
        mode = image.mode
        original_size = image.size
        orientation = image.getexif().get(0x0112, 1)
        if image_format == "JPEG":
            # Decode at a reduced DCT scale when the photo is much larger than
            # needed: several times faster, and the resize below antialiases anyway.
            target = max(height, width)
            image.draft(None, (target, target))
        image.load()
        image = ImageOps.exif_transpose(image) if orientation not in (1, None) else image
        image = _to_8bit_rgb_or_l(image)
        image = image.convert("RGB" if channels == 3 else "L")
        if image.size != (width, height):
            image = image.resize((width, height), Image.BILINEAR, reducing_gap=3.0)
        pixels = np.asarray(image, dtype=np.uint8)
    except ImageDecodeError:
        raise
    except UnidentifiedImageError:
        raise ImageDecodeError(_unidentified_reason(data)) from None
    except Image.DecompressionBombError as exc:
        raise ImageDecodeError(f"image too large ({exc})") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        text = str(exc).split("\n")[0]
        if "truncated" in text.lower():
            raise ImageDecodeError(f"truncated file ({text})") from None
        raise ImageDecodeError(f"corrupt or unsupported image ({text or type(exc).__name__})") from None
    except MemoryError:
        raise ImageDecodeError("image too large to decode (out of memory)", cacheable=False) from None
    except Exception as exc:  # noqa: BLE001 - Pillow's plugins raise odd types on fuzzed files; one bad file must never stop a run
        text = str(exc).split("\n")[0]
        raise ImageDecodeError(f"corrupt image ({type(exc).__name__}{': ' + text if text else ''})") from None
    if channels == 1:
        pixels = pixels[..., np.newaxis]
    info = ImageInfo(image_format, mode, *original_size, orientation not in (1, None), frames, content_hash)
    return pixels, info


# Magic numbers: a file Pillow cannot identify is a broken image when it starts
# like one, an unsupported format when it starts like one of these, else not an image.
_IMAGE_MAGIC = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
)
_UNSUPPORTED_MAGIC = (
    (b"%PDF", "PDF"),
    (b"8BPS", "Photoshop PSD"),
    (b"\x00\x00\x00\x0cjP  ", "JPEG 2000"),
    (b"\xff\x0a", "JPEG XL"),
    (b"\x00\x00\x00\x0cJXL ", "JPEG XL"),
)
_FTYP_BRANDS = {
    b"heic": "HEIC",
    b"heix": "HEIC",
    b"hevc": "HEIC",
    b"mif1": "HEIF",
    b"msf1": "HEIF",
    b"avif": "AVIF",
    b"avis": "AVIF",
}


def _unidentified_reason(data: bytes) -> str:
    head = data[:64]
    for magic, name in _IMAGE_MAGIC:
        if head.startswith(magic):
            return f"truncated or corrupt {name} (header unreadable)"
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "truncated or corrupt WEBP (header unreadable)"
    for magic, name in _UNSUPPORTED_MAGIC:
        if head.startswith(magic):
            return f"unsupported format ({name})"
    if head[4:8] == b"ftyp":
        brand = _FTYP_BRANDS.get(head[8:12])
        return f"unsupported format ({brand})" if brand else "unsupported format (video or ISO media file)"
    if b"<svg" in data[:1024].lower():
        return "unsupported format (SVG)"
    return "not an image (unrecognised content)"


def _to_8bit_rgb_or_l(image: Image.Image) -> Image.Image:
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(image).astype(np.float64)
        top = 65535.0 if mode.startswith("I;16") or array.max() > 255 else 255.0
        return Image.fromarray(np.clip(array / top * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    if mode == "F":
        return Image.fromarray(np.clip(np.asarray(image), 0, 255).astype(np.uint8), "L")
    if mode in ("P", "PA"):
        image = image.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "La", "RGBa"):
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, image.convert("RGBA")).convert("RGB")
    return image


def is_image_candidate(path: Path) -> bool:
    """Files tlcli treats as images: known extension, not hidden."""
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")
