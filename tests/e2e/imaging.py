"""Pure-Python checks of image files (no Pillow): PNG is fully decoded, JPEG and WebP headers
are parsed far enough to know they are real files of a given size."""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# PNG colour type -> channels
_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}


@dataclass
class Png:
    width: int
    height: int
    bit_depth: int
    color_type: int
    has_trns: bool
    channels: int
    rows: list[bytes]  # unfiltered scanlines, 8-bit images only (else empty)

    @property
    def has_alpha_channel(self) -> bool:
        return self.color_type in (4, 6)

    def pixel(self, x: int, y: int) -> tuple[int, ...]:
        c = self.channels
        row = self.rows[y]
        return tuple(row[x * c : x * c + c])


def _paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    if pa <= pb and pa <= pc:
        return a
    return b if pb <= pc else c


def _unfilter(data: bytes, width: int, height: int, bpp: int) -> list[bytes]:
    stride = width * bpp
    rows: list[bytes] = []
    prev = bytearray(stride)
    pos = 0
    for _ in range(height):
        kind = data[pos]
        line = bytearray(data[pos + 1 : pos + 1 + stride])
        pos += 1 + stride
        if kind == 0:
            pass
        elif kind == 1:
            for i in range(bpp, stride):
                line[i] = (line[i] + line[i - bpp]) & 0xFF
        elif kind == 2:
            for i in range(stride):
                line[i] = (line[i] + prev[i]) & 0xFF
        elif kind == 3:
            for i in range(stride):
                left = line[i - bpp] if i >= bpp else 0
                line[i] = (line[i] + ((left + prev[i]) >> 1)) & 0xFF
        elif kind == 4:
            for i in range(stride):
                left = line[i - bpp] if i >= bpp else 0
                up_left = prev[i - bpp] if i >= bpp else 0
                line[i] = (line[i] + _paeth(left, prev[i], up_left)) & 0xFF
        else:
            raise AssertionError(f"PNG row uses unknown filter type {kind}")
        rows.append(bytes(line))
        prev = line
    return rows


def parse_png(data: bytes, *, decode_pixels: bool = False) -> Png:
    """Parses and checks a PNG: signature, chunk CRCs, IHDR first, IEND last, and that the
    decompressed image data has exactly the size IHDR implies. Raises AssertionError if not."""
    assert data[:8] == PNG_SIGNATURE, f"not a PNG (starts with {data[:8]!r})"
    pos = 8
    chunks: list[tuple[bytes, bytes]] = []
    while pos < len(data):
        assert pos + 8 <= len(data), "truncated PNG chunk header"
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        assert len(body) == length, f"truncated PNG chunk {kind!r}"
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert crc == zlib.crc32(kind + body) & 0xFFFFFFFF, f"bad CRC in PNG chunk {kind!r}"
        chunks.append((kind, body))
        pos += 12 + length
        if kind == b"IEND":
            break
    assert chunks and chunks[0][0] == b"IHDR", "PNG does not start with IHDR"
    assert chunks[-1][0] == b"IEND", "PNG does not end with IEND"
    width, height, depth, color_type, _comp, _filter, interlace = struct.unpack(">IIBBBBB", chunks[0][1])
    assert width > 0 and height > 0
    assert color_type in _CHANNELS, f"bad PNG colour type {color_type}"
    channels = _CHANNELS[color_type]
    idat = b"".join(body for kind, body in chunks if kind == b"IDAT")
    assert idat, "PNG has no IDAT"
    raw = zlib.decompress(idat)
    rows: list[bytes] = []
    if interlace == 0:
        row_bytes = (width * channels * depth + 7) // 8
        assert len(raw) == height * (1 + row_bytes), (
            f"PNG image data is {len(raw)} bytes, expected {height * (1 + row_bytes)} for {width}x{height}"
        )
        if decode_pixels and depth == 8:
            rows = _unfilter(raw, width, height, channels)
    return Png(
        width=width,
        height=height,
        bit_depth=depth,
        color_type=color_type,
        has_trns=any(kind == b"tRNS" for kind, _ in chunks),
        channels=channels,
        rows=rows,
    )


def jpeg_size(data: bytes) -> tuple[int, int]:
    """(width, height) of a baseline or progressive JPEG; AssertionError if not a JPEG."""
    assert data[:3] == b"\xff\xd8\xff", f"not a JPEG (starts with {data[:4]!r})"
    assert data.rstrip(b"\x00")[-2:] == b"\xff\xd9", "JPEG does not end with EOI"
    pos = 2
    while pos + 4 <= len(data):
        assert data[pos] == 0xFF, f"bad JPEG marker at {pos}"
        marker = data[pos + 1]
        if marker == 0xFF:
            pos += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            pos += 2
            continue
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        if marker in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF):
            height, width = struct.unpack(">HH", data[pos + 5 : pos + 9])
            return width, height
        pos += 2 + length
    raise AssertionError("JPEG has no SOF marker")


@dataclass
class WebP:
    width: int
    height: int
    kind: str  # "VP8 ", "VP8L" or "VP8X"
    alpha: bool


def parse_webp(data: bytes) -> WebP:
    """Size, encoding and alpha flag of a WebP; AssertionError if not a WebP."""
    assert data[:4] == b"RIFF" and data[8:12] == b"WEBP", f"not a WebP (starts with {data[:12]!r})"
    (riff_size,) = struct.unpack("<I", data[4:8])
    assert riff_size + 8 == len(data) or riff_size + 8 == len(data) - 1, (
        f"RIFF size {riff_size} does not match the file length {len(data)}"
    )
    kind = data[12:16]
    body = data[20:]
    if kind == b"VP8L":
        assert body[0] == 0x2F, "bad VP8L signature"
        (bits,) = struct.unpack("<I", body[1:5])
        width = (bits & 0x3FFF) + 1
        height = ((bits >> 14) & 0x3FFF) + 1
        alpha = bool((bits >> 28) & 1)
        return WebP(width, height, "VP8L", alpha)
    if kind == b"VP8X":
        flags = body[0]
        width = 1 + int.from_bytes(body[4:7], "little")
        height = 1 + int.from_bytes(body[7:10], "little")
        return WebP(width, height, "VP8X", bool(flags & 0x10))
    if kind == b"VP8 ":
        assert body[3:6] == b"\x9d\x01\x2a", "bad VP8 start code"
        width, height = struct.unpack("<HH", body[6:10])
        return WebP(width & 0x3FFF, height & 0x3FFF, "VP8 ", False)
    raise AssertionError(f"unknown WebP chunk {kind!r}")
