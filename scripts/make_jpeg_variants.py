"""Writes tests/fixtures/photos/jpeg_variants/: crops of astronaut.jpg re-encoded by Pillow's libjpeg
in the baseline layouts the fast DCT-scaled decoder handles (chroma subsampling, optimised Huffman
tables, restart intervals, grayscale, 16-bit quantisation tables) and a progressive file it hands
back to the general decoder. Odd sizes leave partial MCUs at the right and bottom edges.

Usage: .bench-venv/bin/python scripts/make_jpeg_variants.py
"""
import pathlib

from PIL import Image

root = pathlib.Path(__file__).resolve().parent.parent / "tests/fixtures/photos"
out = root / "jpeg_variants"
out.mkdir(exist_ok=True)
source = Image.open(root / "astronaut.jpg").convert("RGB")
small = source.crop((61, 40, 61 + 203, 40 + 157))
wide = source.crop((0, 100, 509, 100 + 261))
small.save(out / "s444_q90.jpg", quality=90, subsampling="4:4:4")
small.save(out / "s422_q90.jpg", quality=90, subsampling="4:2:2")
wide.save(out / "s420_q75_optimized.jpg", quality=75, subsampling="4:2:0", optimize=True)
wide.save(out / "s420_q95_restart.jpg", quality=95, subsampling="4:2:0", restart_marker_blocks=7)
small.convert("L").save(out / "gray_q85.jpg", quality=85)
# Quantiser steps above 255 need 16-bit tables, which libjpeg writes as an extended (SOF1) frame.
small.save(out / "s420_qtable16.jpg", qtables=[[300] + [2] * 63, [400] + [3] * 63], subsampling="4:2:0")
small.save(out / "s420_progressive.jpg", quality=90, progressive=True)
for path in sorted(out.glob("*.jpg")):
    image = Image.open(path)
    print(path.name, image.size, image.mode, path.stat().st_size, "bytes")
