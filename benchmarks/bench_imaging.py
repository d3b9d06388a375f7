"""Decode rate of chest X-ray DICOMs built from the NIH ChestX-ray14 sample.

Prints images/s per transfer syntax for ``PydicomReader.read`` (decode + modality/VOI
LUT + MONOCHROME1 handling) on full-size 1024x1024 films, next to the rate of
``PIL`` reading the same PNGs (the source files). Run: ``python benchmarks/bench_imaging.py``.
"""

from __future__ import annotations

import argparse
import io
import time
from pathlib import Path

from PIL import Image

from fhir_adapters.imaging import PydicomReader
from fhir_adapters.imaging.synthetic import CxrDicomSpec, Encoding, cxr_dicom_bytes, load_png

NIH = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "cxr-nih-sample" / "images"


def _rate(count: int, seconds: float) -> str:
    return f"{count / seconds:8.1f} images/s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=20, help="NIH PNGs to use (max 60)")
    args = parser.parse_args()
    pngs = sorted(NIH.resolve().glob("*.png"))[: args.images]
    if not pngs:
        raise SystemExit(f"no PNGs under {NIH}")
    pixels = [load_png(p) for p in pngs]
    reader = PydicomReader()

    start = time.perf_counter()
    for p in pngs:
        with Image.open(io.BytesIO(p.read_bytes())) as img:
            img.load()
    print(f"{'PNG (Pillow, reference)':28s}{_rate(len(pngs), time.perf_counter() - start)}")

    for encoding in Encoding:
        files = [cxr_dicom_bytes(px, CxrDicomSpec(encoding=encoding)) for px in pixels]
        size = sum(len(f) for f in files) / len(files) / 1e6
        start = time.perf_counter()
        for data in files:
            reader.read(data)
        elapsed = time.perf_counter() - start
        print(f"{'DICOM ' + encoding.value:28s}{_rate(len(files), elapsed)}   {size:5.2f} MB/file")


if __name__ == "__main__":
    main()
