"""Download GroupLens data sets once into a per-user cache, verified, never half-written.

Verification: a download is accepted when EITHER the zip's sha256 equals the pinned archive hash
(:data:`ML_LATEST_SMALL_SHA256`, the value TensorFlow Datasets and others publish for the September
2018 release) OR the sha256 of the ``ratings.csv`` inside equals :data:`ML_LATEST_SMALL_RATINGS_SHA256`.
Why both: the archive hash cannot be checked offline while writing this code, and a re-zip of identical
data by GroupLens (new timestamps, new compression) would change the archive hash but not the ratings;
the ratings hash is what the numbers depend on. Tests point the URL and hashes elsewhere by overriding
these module constants.

Atomicity (:func:`xlcf.fileio.atomic_output`): bytes stream into a temporary file in the cache folder, are
hashed on the way, verified, fsynced, and only then ``os.replace``-d to their final name. Any failure removes
the temporary file.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import sys
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from xlcf.errors import DataError
from xlcf.fileio import atomic_output

ML_LATEST_SMALL_URL = "https://files.grouplens.org/datasets/movielens/ml-latest-small.zip"
#: sha256 of ml-latest-small.zip (September 2018 release); None disables the archive check.
ML_LATEST_SMALL_SHA256: str | None = "696d65a3dfceac7c45750ad32df2c259311949efec81f0f144fdfb91ebc9e436"
#: sha256 of ml-latest-small/ratings.csv inside it; None disables the content check.
ML_LATEST_SMALL_RATINGS_SHA256: str | None = "ce4ee31e7429a472feb8723da251f70abd7f0fcd07b55c25189023c862a432d8"

#: seconds before an unanswered connection counts as offline
TIMEOUT_S = 30.0
_CHUNK = 1 << 16


class _ShortRead(OSError):
    """The server hung up before sending the announced Content-Length."""


@dataclass(frozen=True)
class Dataset:
    name: str
    filename: str


DATASETS = {"ml-latest-small": Dataset("ml-latest-small", "ml-latest-small.zip")}


def _settings(name: str) -> tuple[str, str | None, str | None]:
    # Read the module constants at call time so tests (and users) can override them.
    if name == "ml-latest-small":
        return ML_LATEST_SMALL_URL, ML_LATEST_SMALL_SHA256, ML_LATEST_SMALL_RATINGS_SHA256
    raise DataError(f"unknown data set {name!r}; known: {', '.join(sorted(DATASETS))}")  # pragma: no cover


def cache_folder(override: str | os.PathLike | None = None) -> Path:
    """The per-user cache folder: ``override`` > ``$XLCF_CACHE_DIR`` > ``$XDG_CACHE_HOME/xlcf`` >
    ``%LOCALAPPDATA%/xlcf`` on Windows > ``~/.cache/xlcf``."""
    if override:
        return Path(override).expanduser()
    if os.environ.get("XLCF_CACHE_DIR"):
        return Path(os.environ["XLCF_CACHE_DIR"]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "xlcf"
    if sys.platform == "win32" and os.environ.get("LOCALAPPDATA"):
        return Path(os.environ["LOCALAPPDATA"]) / "xlcf"
    return Path.home() / ".cache" / "xlcf"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _ratings_sha256(zip_path: Path) -> str | None:
    try:
        with zipfile.ZipFile(zip_path) as archive:
            members = [n for n in archive.namelist() if PurePosixPath(n).name == "ratings.csv"]
            if not members:
                return None
            digest = hashlib.sha256()
            with archive.open(min(members, key=lambda n: (n.count("/"), n))) as handle:
                for chunk in iter(lambda: handle.read(_CHUNK), b""):
                    digest.update(chunk)
            return digest.hexdigest()
    except (zipfile.BadZipFile, OSError, EOFError):
        return None


def verify(
    zip_path: Path, zip_sha256: str | None, ratings_sha256: str | None, *, zip_digest: str | None = None
) -> str | None:
    """``None`` when the file passes; otherwise a short reason. Passing = archive hash matches,
    or the inner ratings.csv hash matches (see the module docstring)."""
    if zip_sha256 is None and ratings_sha256 is None:
        return None  # nothing pinned: accept (only reachable when a user clears both constants)
    digest = zip_digest or sha256_file(zip_path)
    if zip_sha256 is not None and digest == zip_sha256.lower():
        return None
    inner = _ratings_sha256(zip_path) if ratings_sha256 is not None else None
    if ratings_sha256 is not None and inner == ratings_sha256.lower():
        return None
    expected = " or ".join(
        x
        for x in (zip_sha256 and f"zip sha256 {zip_sha256}", ratings_sha256 and f"ratings.csv sha256 {ratings_sha256}")
        if x
    )
    got = f"zip sha256 {digest}" + (f", ratings.csv sha256 {inner}" if inner else "")
    return f"checksum mismatch: got {got}; expected {expected}"


def fetch(name: str, *, cache_dir: str | os.PathLike | None = None, download: bool = True) -> Path:
    """Path of the verified zip of data set ``name`` in the cache, downloading it first if needed."""
    url, zip_sha256, ratings_sha256 = _settings(name)
    folder = cache_folder(cache_dir)
    target = folder / DATASETS[name].filename
    how_to_avoid = (
        f"download it yourself from {url} and pass the file (xlcf crosstab path/to/{target.name}), "
        f"pass a folder or ratings.csv you already have, or put the zip at {target}"
    )
    if target.is_file():
        problem = verify(target, zip_sha256, ratings_sha256)
        if problem is None:
            return target
        # A cached copy that no longer verifies (edited, truncated, older release): replace it.
        target.unlink(missing_ok=True)
        if not download:
            raise DataError(f"{name}: cached copy {target} failed verification ({problem}); removed it")
    if not download:
        raise DataError(f"{name}: no cached copy in {folder}; {how_to_avoid}")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DataError(
            f"{name}: cannot create cache folder {folder} ({err.strerror or err}); set XLCF_CACHE_DIR or {how_to_avoid}"
        ) from None
    _download(url, target, zip_sha256, ratings_sha256, name=name, how_to_avoid=how_to_avoid)
    return target


def _download(
    url: str, target: Path, zip_sha256: str | None, ratings_sha256: str | None, *, name: str, how_to_avoid: str
) -> None:
    with atomic_output(target, suffix=".part") as tmp:  # replaced only once verified; removed on any error
        digest = hashlib.sha256()
        try:
            with open(tmp, "wb") as out, urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
                expected_size = response.headers.get("Content-Length") if hasattr(response, "headers") else None
                received = 0
                for chunk in iter(lambda: response.read(_CHUNK), b""):
                    digest.update(chunk)
                    out.write(chunk)
                    received += len(chunk)
                if expected_size is not None and expected_size.isdigit() and received < int(expected_size):
                    # urllib returns a short body quietly when the server hangs up early.
                    raise _ShortRead(f"connection closed after {received} of {expected_size} bytes")
        except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as err:
            reason: object
            if isinstance(err, urllib.error.HTTPError):
                reason = f"HTTP {err.code} {err.reason}"
            elif isinstance(err, http.client.IncompleteRead):
                reason = f"connection closed after {len(err.partial)} bytes"
            else:
                reason = getattr(err, "reason", None) or getattr(err, "strerror", None) or err
            raise DataError(
                f"{name}: cannot download {url} ({reason}) and there is no cached copy; {how_to_avoid}"
            ) from None
        problem = verify(tmp, zip_sha256, ratings_sha256, zip_digest=digest.hexdigest())
        if problem is not None:
            raise DataError(
                f"{name}: download from {url} rejected, {problem}; nothing was cached. "
                f"If GroupLens published a new release, {how_to_avoid}"
            )
