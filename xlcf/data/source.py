"""Where ratings come from: a CSV path, a folder holding ratings.csv, a GroupLens zip, or a known
data-set name (downloaded once into the per-user cache by :mod:`xlcf.data.download`).

Everything downstream reads through :class:`RatingsSource`, so the parser never cares whether the
bytes sit in a plain file or inside a zip, and error messages always name the file the person gave.
"""

from __future__ import annotations

import contextlib
import io
import os
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

from xlcf.errors import DataError, quote
from xlcf.fileio import MAX_DATA_MEMBER, ZipMemberError, read_zip_member

RATINGS_NAME = "ratings.csv"
MOVIES_NAME = "movies.csv"


@dataclass(frozen=True)
class RatingsSource:
    """A resolved ratings source. ``label`` is how messages name the ratings file
    (``ratings.csv`` or ``ml-latest-small.zip/ml-latest-small/ratings.csv``)."""

    label: str
    path: Path  # the file on disk: the CSV itself, or the zip that holds it
    member: str | None = None  # ratings member inside the zip
    movies_path: Path | None = None  # movies.csv on disk, or the zip that holds it
    movies_member: str | None = None

    @property
    def movies_label(self) -> str | None:
        if self.movies_path is None:
            return None
        if self.movies_member is None:
            return str(self.movies_path)
        return f"{self.movies_path}/{self.movies_member}"

    @contextlib.contextmanager
    def open_ratings(self) -> Iterator[IO[bytes]]:
        with _open(self.path, self.member, self.label) as handle:
            yield handle

    @contextlib.contextmanager
    def open_movies(self) -> Iterator[IO[bytes]]:
        if self.movies_path is None:  # pragma: no cover - callers check first
            raise DataError(f"no {MOVIES_NAME} beside it", where=str(self.label))
        with _open(self.movies_path, self.movies_member, self.movies_label or "") as handle:
            yield handle


@contextlib.contextmanager
def _open(path: Path, member: str | None, label: str) -> Iterator[IO[bytes]]:
    try:
        if member is None:
            with open(path, "rb") as handle:
                yield handle
        else:
            with zipfile.ZipFile(path) as archive:
                # Zip members do not seek cheaply; parsers want a real buffer. Read with bounds: a small zip
                # must not expand into gigabytes.
                data = read_zip_member(archive, archive.getinfo(member), max_size=MAX_DATA_MEMBER)
            yield io.BytesIO(data)
    except ZipMemberError as err:
        raise DataError(str(err), where=label) from None
    except FileNotFoundError:
        raise DataError("file not found", where=str(label)) from None
    except IsADirectoryError:
        raise DataError("is a folder, expected a CSV file", where=str(label)) from None
    except PermissionError:
        raise DataError("permission denied", where=str(label)) from None
    except (zipfile.BadZipFile, zipfile.LargeZipFile) as err:
        raise DataError(f"damaged zip file ({quote(err, 120)[1:-1]})", where=str(label)) from None


def resolve_source(
    source: str | os.PathLike, *, cache_dir: str | os.PathLike | None = None, download: bool = True
) -> RatingsSource:
    """Turn what a person typed into a :class:`RatingsSource`.

    A path that exists always wins over a data-set name (a folder called ``ml-latest-small`` that you
    unzipped yourself is read as is). A known name (``ml-latest-small``) is fetched into the cache
    once; ``download=False`` only looks in the cache.
    """
    from xlcf.data import download as _download  # local: keeps the import graph one-way

    if source is None or (isinstance(source, str) and not source.strip()):
        raise DataError(
            "no ratings source given: pass a ratings.csv, a folder holding one, a zip, or the name ml-latest-small"
        )
    path = Path(os.fspath(source)).expanduser()
    if path.is_dir():
        return _from_folder(path)
    if path.is_file():
        if zipfile.is_zipfile(path):
            return _from_zip(path)
        movies = path.parent / MOVIES_NAME
        return RatingsSource(
            label=str(source), path=path, movies_path=movies if movies.is_file() and movies != path else None
        )
    name = str(source)
    if name in _download.DATASETS:
        return _from_zip(_download.fetch(name, cache_dir=cache_dir, download=download))
    known = ", ".join(sorted(_download.DATASETS))
    raise DataError(
        f"file not found (expected a ratings CSV, a folder holding {RATINGS_NAME}, "
        f"a GroupLens zip, or one of the names: {known})",
        where=str(source),
    )


def _from_folder(folder: Path) -> RatingsSource:
    ratings = folder / RATINGS_NAME
    if not ratings.is_file():
        found = sorted(p.name for p in folder.iterdir() if p.suffix.lower() in (".csv", ".zip"))
        hint = f" (found: {', '.join(found[:8])})" if found else ""
        raise DataError(f"no {RATINGS_NAME} in this folder{hint}", where=str(folder))
    movies = folder / MOVIES_NAME
    return RatingsSource(label=str(ratings), path=ratings, movies_path=movies if movies.is_file() else None)


def _from_zip(path: Path) -> RatingsSource:
    try:
        with zipfile.ZipFile(path) as archive:
            names = [n for n in archive.namelist() if not n.startswith("__MACOSX/") and not n.endswith("/")]
    except zipfile.BadZipFile as err:
        raise DataError(f"damaged zip file ({quote(err, 120)[1:-1]})", where=str(path)) from None
    ratings = [n for n in names if PurePosixPath(n).name == RATINGS_NAME]
    if not ratings:
        raise DataError(
            f"the zip holds no {RATINGS_NAME} (it holds {len(names)} files, "
            f"e.g. {', '.join(quote(n, 40)[1:-1] for n in names[:5]) or 'nothing'})",
            where=str(path),
        )
    member = min(ratings, key=lambda n: (n.count("/"), n))  # the shallowest one, as GroupLens lays it out
    movies = str(PurePosixPath(member).with_name(MOVIES_NAME)) if "/" in member else MOVIES_NAME
    return RatingsSource(
        label=f"{path}/{member}",
        path=path,
        member=member,
        movies_path=path if movies in names else None,
        movies_member=movies if movies in names else None,
    )
