"""Fixtures for the imaging tests: NIH chest radiographs and the pydicom-data CR film."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from fhir_adapters.imaging.synthetic import load_png
from tests.conftest import IN_CI
from tests.servers import start_orthanc

NIH_FOLDER = "cxr-nih-sample/images"


def pydicom_data_folder() -> Path | None:
    """The installed ``pydicom-data`` package's data folder (local files, never a download)."""
    spec = importlib.util.find_spec("data_store")
    if spec is None or spec.origin is None:
        return None
    folder = Path(spec.origin).parent / "data"
    return folder if (folder / "RG1_UNCR.dcm").is_file() else None


@pytest.fixture(scope="session")
def pydicom_data() -> Path:
    """Folder holding RG1_UNCR.dcm (a real CR chest film) and its JPEG 2000 variants."""
    folder = pydicom_data_folder()
    if folder is None:
        msg = "pydicom-data is not installed (pip install pydicom-data)"
        if IN_CI:
            pytest.fail(msg)
        pytest.skip(msg)
    return folder


@pytest.fixture(scope="session")
def nih_pngs(shared_data: Path) -> list[Path]:
    """The 60 NIH ChestX-ray14 PNGs, sorted by name."""
    pngs = sorted((shared_data / NIH_FOLDER).glob("*.png"))
    assert pngs, f"no PNGs in {shared_data / NIH_FOLDER}"
    return pngs


@pytest.fixture(scope="session")
def nih_pixels(nih_pngs: list[Path]) -> npt.NDArray[np.uint8]:
    """One NIH radiograph, cropped to 512x512 to keep codecs fast: (H, W) uint8."""
    return load_png(nih_pngs[0])[256:768, 256:768].copy()


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One Orthanc + DICOMweb per test module (each test uses its own study UIDs)."""
    with start_orthanc(tmp_path_factory.mktemp("orthanc")) as base:
        yield base
