#!/usr/bin/env python3
"""Writes the first N Fashion-MNIST test images as 8-bit grayscale PNGs.

The files are named test-NNNNN-label-K.png (K is the true class) so that
`student demo` can score itself. Standard library only.

    python3 models/fashion-mnist/make_samples.py [--count 32] [--dir /usr/share/datasets/fashion-mnist]
"""
import argparse
import gzip
import pathlib
import struct
import zlib


def read_idx(path):
    data = gzip.open(path).read()
    zero, kind, rank = struct.unpack(">HBB", data[:4])
    if zero != 0 or kind != 0x08:
        raise SystemExit(f"{path}: not an unsigned-byte IDX file")
    dims = struct.unpack(f">{rank}I", data[4 : 4 + 4 * rank])
    return dims, data[4 + 4 * rank :]


def png_gray8(width, height, pixels):
    def chunk(tag, body):
        crc = zlib.crc32(tag + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", crc)

    rows = b"".join(b"\x00" + pixels[r * width : (r + 1) * width] for r in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows, 9)) + chunk(b"IEND", b"")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=32)
    parser.add_argument("--dir", default="/usr/share/datasets/fashion-mnist")
    args = parser.parse_args()
    (n, h, w), images = read_idx(pathlib.Path(args.dir) / "t10k-images-idx3-ubyte.gz")
    (_,), labels = read_idx(pathlib.Path(args.dir) / "t10k-labels-idx1-ubyte.gz")
    out = pathlib.Path(__file__).resolve().parent / "samples"
    out.mkdir(exist_ok=True)
    for i in range(min(args.count, n)):
        pixels = images[i * h * w : (i + 1) * h * w]
        (out / f"test-{i:05d}-label-{labels[i]}.png").write_bytes(png_gray8(w, h, pixels))
    print(f"wrote {min(args.count, n)} samples to {out}")


if __name__ == "__main__":
    main()
