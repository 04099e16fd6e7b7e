"""Shared fixtures: where the real MovieLens copies are, and whether LibreOffice is here."""

from __future__ import annotations

import os
from pathlib import Path

# xlwings registers its remote engine when it is first imported, and only with a key present: set it before any
# test module imports xlwings. Tests may use the non-commercial key; the package itself never sets one.
os.environ.setdefault("XLWINGS_LICENSE_KEY", "noncommercial")

import pytest

from tests.helpers.libreoffice import libreoffice_missing_reason, recalculate

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("XLCF_SHARED_DATA", REPO.parent / "shared" / "data"))
ML_2018 = SHARED_DATA / "ml-latest-small"
ML_2016 = SHARED_DATA / "ml-latest-small-2016"


def _need(path: Path) -> Path:
    if not (path / "ratings.csv").exists():
        pytest.skip(f"real MovieLens copy not found at {path} (../shared/data is absent on this machine)")
    return path


@pytest.fixture(scope="session")
def synthetic_data(tmp_path_factory) -> Path:
    """Folder holding a small synthetic ratings.csv + movies.csv, written by tests/data/make_synthetic.py at the
    start of the run (deterministic): the engine's logic is tested on it where the real MovieLens copies are
    absent. No ratings file is stored in the repository."""
    from tests.data.make_synthetic import write

    return write(tmp_path_factory.mktemp("data") / "synthetic")


@pytest.fixture(scope="session")
def ml2018() -> Path:
    """Folder of the September 2018 ml-latest-small release (ratings.csv, movies.csv)."""
    return _need(ML_2018)


@pytest.fixture(scope="session")
def ml2016() -> Path:
    """Folder of the October 2016 release the lesson used."""
    return _need(ML_2016)


@pytest.fixture(scope="session")
def libreoffice():
    """``recalculate(*paths, save_as=None)`` backed by real headless LibreOffice Calc; skips without it."""
    reason = libreoffice_missing_reason()
    if reason:
        pytest.skip(reason)
    return recalculate


def pytest_collection_modifyitems(config, items):
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except Exception:  # pragma: no cover - torch missing is an install error reported elsewhere
        has_cuda = False
    skip_gpu = pytest.mark.skip(reason="no CUDA device on this machine")
    for item in items:
        if "gpu" in item.keywords and not has_cuda:
            item.add_marker(skip_gpu)
