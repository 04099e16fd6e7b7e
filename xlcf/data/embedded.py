"""The lesson's 15x15 table, shipped with xlcf so `xlcf demo` works offline.

Where the CSVs are: in a wheel, ``data/`` is installed as the package ``xlcf._embedded``; in a source
checkout or an editable install that mapping does not exist, so we fall back to the repo's ``data/``.
"""

from __future__ import annotations

import io
from functools import lru_cache
from pathlib import Path

import pandas as pd

from xlcf.errors import DataError

CROSSTAB_FILE = "lesson_crosstab.csv"
MOVIES_FILE = "lesson_movies.csv"


def embedded_bytes(name: str) -> bytes:
    """Bytes of an embedded data file, from the installed package or the source tree."""
    try:
        from importlib.resources import files

        resource = files("xlcf._embedded") / name
        if resource.is_file():
            return resource.read_bytes()
    except (ModuleNotFoundError, FileNotFoundError, NotADirectoryError, TypeError):
        pass
    for folder in (Path(__file__).resolve().parents[1] / "_embedded", Path(__file__).resolve().parents[2] / "data"):
        if (folder / name).is_file():
            return (folder / name).read_bytes()
    raise DataError(f"embedded data file {name} is missing from this installation (reinstall xlcf)")


def parse_crosstab_csv(data: bytes, label: str) -> pd.DataFrame:
    """Read a crosstab CSV (header ``userId,<movie ids>``; blank = unrated) as crosstab() returns it."""
    try:
        table = pd.read_csv(io.BytesIO(data), index_col=0)
    except (pd.errors.ParserError, ValueError) as err:
        raise DataError(f"cannot parse ({str(err).strip().splitlines()[0]})", where=str(label)) from None
    table.index = pd.Index(table.index.astype("int64"), name="userId")
    table.columns = pd.Index([int(c) for c in table.columns], dtype="int64", name="movieId")
    return table.astype("float64")


@lru_cache(maxsize=1)
def _lesson_crosstab() -> pd.DataFrame:
    return parse_crosstab_csv(embedded_bytes(CROSSTAB_FILE), CROSSTAB_FILE)


def lesson_crosstab() -> pd.DataFrame:
    """The lesson's 15 users x 15 movies (2016 ml-latest-small), NaN where unrated. A fresh copy each call."""
    return _lesson_crosstab().copy()


@lru_cache(maxsize=1)
def _lesson_titles() -> tuple[tuple[int, str], ...]:
    movies = pd.read_csv(io.BytesIO(embedded_bytes(MOVIES_FILE)), dtype={"movieId": "int64", "title": "object"})
    return tuple(zip(movies["movieId"].tolist(), movies["title"].tolist()))


def lesson_titles() -> dict[int, str]:
    """movieId -> title of the lesson table's 15 movies."""
    return dict(_lesson_titles())
