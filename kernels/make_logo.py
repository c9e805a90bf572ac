"""Draw the Golem kernel's logo (kernels/golem-python/logo-*.png, logo-svg.svg) without image libraries.

The mark is a hexagonal cell (a notebook cell, a node of the market) with three workers inside.
Run it again after changing the shapes: ``python kernels/make_logo.py``.
"""

from __future__ import annotations

import math
import struct
import zlib
from pathlib import Path

HERE = Path(__file__).parent / "golem-python"
BLUE = (31, 111, 235)
WHITE = (255, 255, 255)
DOTS = [(0.5 + 0.2 * math.cos(a), 0.5 + 0.2 * math.sin(a)) for a in (-math.pi / 2, math.pi / 6, 5 * math.pi / 6)]


def hexagon(radius: float) -> list[tuple[float, float]]:
    return [(0.5 + radius * math.cos(math.pi / 6 + k * math.pi / 3), 0.5 + radius * math.sin(math.pi / 6 + k * math.pi / 3)) for k in range(6)]


def inside(polygon: list[tuple[float, float]], x: float, y: float) -> bool:
    hit = False
    for (x1, y1), (x2, y2) in zip(polygon, polygon[1:] + polygon[:1]):
        if (y1 > y) != (y2 > y) and x < x1 + (y - y1) * (x2 - x1) / (y2 - y1):
            hit = not hit
    return hit


def colour(x: float, y: float) -> tuple[int, int, int, int]:
    """The logo at a point of the unit square: RGBA."""
    if not inside(hexagon(0.48), x, y):
        return (0, 0, 0, 0)
    if any((x - dx) ** 2 + (y - dy) ** 2 <= 0.085**2 for dx, dy in DOTS):
        return (*WHITE, 255)
    if inside(hexagon(0.36), x, y) and not inside(hexagon(0.30), x, y):
        return (*WHITE, 255)
    return (*BLUE, 255)


def png(size: int, samples: int = 4) -> bytes:
    rows = []
    for j in range(size):
        row = bytearray([0])  # filter type 0
        for i in range(size):
            acc = [0, 0, 0, 0]
            for sj in range(samples):
                for si in range(samples):
                    rgba = colour((i + (si + 0.5) / samples) / size, (j + (sj + 0.5) / samples) / size)
                    for c in range(3):
                        acc[c] += rgba[c] * rgba[3]
                    acc[3] += rgba[3]
            alpha = acc[3] / samples**2
            pixel = [round(acc[c] / acc[3]) if acc[3] else 0 for c in range(3)]
            row += bytes([*pixel, round(alpha)])
        rows.append(bytes(row))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", size, size, 8, 6, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"".join(rows), 9)) + chunk(b"IEND", b"")


def svg() -> str:
    def points(polygon):
        return " ".join(f"{64 * x:.2f},{64 * y:.2f}" for x, y in polygon)

    dots = "".join(f'<circle cx="{64 * x:.2f}" cy="{64 * y:.2f}" r="5.44" fill="#fff"/>' for x, y in DOTS)
    return (
        '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 64 64" width="64" height="64">'
        f'<polygon points="{points(hexagon(0.48))}" fill="#1f6feb"/>'
        f'<polygon points="{points(hexagon(0.33))}" fill="none" stroke="#fff" stroke-width="3.84"/>'
        f"{dots}</svg>\n"
    )


if __name__ == "__main__":
    for size in (32, 64):
        (HERE / f"logo-{size}x{size}.png").write_bytes(png(size))
    (HERE / "logo-svg.svg").write_text(svg())
