"""The answer tests/bench/gateway.sh's nginx gives to `POST /v1/images/generations`: OpenAI's
body with one 1024x1024 PNG inline, cut in two around 24 bytes of the PNG that nginx fills
with each request's `$request_id`, so that every answer is a different image (as upstream
images are: the gateway's content-addressed store writes each one) while nginx still sends the
bulk from a file.

The pixels are a vertical gradient plus a little seeded noise, so that the PNG (1.07 MB) is
neither incompressible nor trivially small, like a photograph's. The 24 bytes are the data of a
private ancillary chunk (`bnCh`) right after `IHDR`, aligned so that their base64 is 32
characters of their own; its CRC no longer matches once filled, and decoders skip an ancillary
chunk with a bad CRC. Writes `head.txt` (the body up to those 32 characters) and `tail.json`
(the rest) into the folder given, and prints the PNG's size and its base64 length.

Usage: python3 fake_openai_answer.py OUT_DIR
"""

import base64
import json
import random
import struct
import sys
import zlib
from pathlib import Path

SIDE = 1024
FILLED_BYTES = 24  # 32 base64 characters: a `$request_id` (32 hex digits)


def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def pixels() -> bytes:
    rng = random.Random(18)
    rows = []
    for y in range(SIDE):
        base = y * 200 // SIDE
        spread = 5 if y % 4 == 0 else 4
        noise = bytes(base + b % spread for b in range(256))
        rows.append(b"\x00" + rng.randbytes(SIDE * 3).translate(noise))  # filter: none
    return b"".join(rows)


def main() -> None:
    out = Path(sys.argv[1])
    header = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", SIDE, SIDE, 8, 2, 0, 0, 0))
    # Pad the chunk's data so that the filled bytes start on a 3-byte boundary of the file.
    pad = b"\x00" * (-(len(header) + 8) % 3)
    filled_at = len(header) + 8 + len(pad)
    png = (
        header
        + chunk(b"bnCh", pad + b"\x00" * FILLED_BYTES)
        + chunk(b"IDAT", zlib.compress(pixels(), 6))
        + chunk(b"IEND", b"")
    )
    b64 = base64.b64encode(png).decode()
    start = filled_at // 3 * 4
    end = start + FILLED_BYTES // 3 * 4
    marker = "\x00MARKER\x00"
    body = json.dumps(
        {
            "created": 1767225600,
            "background": "opaque",
            "data": [{"b64_json": b64[:start] + marker + b64[end:]}],
            "output_format": "png",
            "quality": "low",
            "size": f"{SIDE}x{SIDE}",
            "usage": {
                "input_tokens": 50,
                "input_tokens_details": {"image_tokens": 0, "text_tokens": 50},
                "output_tokens": 272,
                "total_tokens": 322,
            },
        },
        separators=(",", ":"),
    )
    head, tail = body.split(json.dumps(marker)[1:-1])
    (out / "head.txt").write_text(head)
    (out / "tail.json").write_text(tail)
    print(len(png), len(b64))


if __name__ == "__main__":
    main()
