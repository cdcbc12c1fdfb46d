"""Thumbnails, made by the hub with Pillow (never by the device), once per image.

Decoding is where images attack: a small file may declare a huge canvas (a decompression
bomb). Images over :data:`MAX_PIXELS` are refused before they are decoded (Pillow reads the
size from the header), and Pillow's own limit is set to the same, so a file that lies about
its size in the header is stopped by the decoder too. ``draft`` lets JPEG decode at a reduced
scale, which makes a thumbnail of a camera picture several times cheaper.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Final

from PIL import Image

__all__ = ["MAX_PIXELS", "THUMBNAIL_SIZE", "make_thumbnail"]

THUMBNAIL_SIZE: Final = (320, 240)
"""Largest width and height of a thumbnail (the aspect ratio is kept)."""
MAX_PIXELS: Final = 50_000_000
"""Largest image (width times height) the hub decodes: a 50-megapixel camera is the most a
device is expected to send."""

Image.MAX_IMAGE_PIXELS = MAX_PIXELS


def make_thumbnail(path: Path) -> bytes | None:
    """A JPEG thumbnail of the image at ``path``, or None when it cannot be decoded or is
    larger than :data:`MAX_PIXELS` (blocking: call it off the event loop)."""
    try:
        with Image.open(path) as image:
            width, height = image.size
            if width * height > MAX_PIXELS:
                return None
            image.draft("RGB", THUMBNAIL_SIZE)
            image.thumbnail(THUMBNAIL_SIZE)
            out = io.BytesIO()
            image.convert("RGB").save(out, "JPEG", quality=80)
    except (OSError, ValueError, Image.DecompressionBombError, SyntaxError):
        return None
    return out.getvalue()
