"""`load_ratings("ml-latest-small")`: download into the cache, verify, never leave a partial file.
Served from a local HTTP server on 127.0.0.1 or a file:// URL: these tests never reach the internet."""

from __future__ import annotations

import hashlib
import http.server
import socket
import threading
import zipfile
from functools import partial
from pathlib import Path

import pytest

from xlcf.cli import main
from xlcf.data import download, load_ratings, load_titles, resolve_source
from xlcf.errors import DataError

RATINGS = "userId,movieId,rating,timestamp\n1,10,4.0,1\n1,20,3.5,2\n2,10,5.0,3\n"
MOVIES = "movieId,title,genres\n10,Ten (1990),Drama\n20,Twenty (2000),Comedy\n"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def build_zip(path: Path, ratings: bytes | str = RATINGS, movies: str = MOVIES) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("ml-latest-small/ratings.csv", ratings)
        archive.writestr("ml-latest-small/movies.csv", movies)
    return path


class Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest output clean
        pass


class Truncating(Quiet):
    """Announces the whole file, sends half, hangs up: an interrupted download."""

    def do_GET(self):
        body = Path(self.directory, self.path.lstrip("/")).read_bytes()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[: len(body) // 2])
        self.wfile.flush()
        self.close_connection = True


@pytest.fixture
def serve(tmp_path):
    """serve(handler=Quiet) -> base URL of a local HTTP server over tmp_path/'srv'."""
    root = tmp_path / "srv"
    root.mkdir()
    servers = []

    def start(handler=Quiet) -> str:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(handler, directory=str(root)))
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    start.root = root
    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def point_at(monkeypatch, url: str, zip_sha256: str | None, ratings_sha256: str | None) -> None:
    monkeypatch.setattr(download, "ML_LATEST_SMALL_URL", url)
    monkeypatch.setattr(download, "ML_LATEST_SMALL_SHA256", zip_sha256)
    monkeypatch.setattr(download, "ML_LATEST_SMALL_RATINGS_SHA256", ratings_sha256)


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/ml-latest-small.zip"  # nothing listens there any more


def cache_files(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.iterdir()) if cache.exists() else []


def test_download_over_http_then_reuse_the_cache(serve, tmp_path, monkeypatch):
    served = build_zip(serve.root / "ml-latest-small.zip")
    point_at(monkeypatch, serve() + "/ml-latest-small.zip", sha256(served.read_bytes()), None)
    cache = tmp_path / "cache"

    df = load_ratings("ml-latest-small", cache_dir=cache)
    assert df["movieId"].tolist() == [10, 20, 10]
    assert cache_files(cache) == ["ml-latest-small.zip"]  # no temp file left behind
    assert (cache / "ml-latest-small.zip").read_bytes() == served.read_bytes()
    assert load_titles("ml-latest-small", cache_dir=cache) == {10: "Ten (1990)", 20: "Twenty (2000)"}

    # Offline now: the verified cached copy is used, nothing is fetched.
    monkeypatch.setattr(download, "ML_LATEST_SMALL_URL", closed_port_url())
    assert load_ratings("ml-latest-small", cache_dir=cache)["rating"].tolist() == [4.0, 3.5, 5.0]


def test_download_from_file_url_verified_by_inner_ratings_hash(tmp_path, monkeypatch):
    # A re-zipped archive (different zip hash) is still accepted when its ratings.csv is the pinned one.
    served = build_zip(tmp_path / "served.zip")
    point_at(monkeypatch, served.as_uri(), "0" * 64, sha256(RATINGS.encode()))
    cache = tmp_path / "cache"
    assert len(load_ratings("ml-latest-small", cache_dir=cache)) == 3
    assert cache_files(cache) == ["ml-latest-small.zip"]


def test_checksum_mismatch_leaves_nothing_in_the_cache(serve, tmp_path, monkeypatch, capsys):
    build_zip(serve.root / "ml-latest-small.zip")
    point_at(monkeypatch, serve() + "/ml-latest-small.zip", "0" * 64, "1" * 64)
    cache = tmp_path / "cache"
    with pytest.raises(
        DataError,
        match=r"ml-latest-small: download from http://127\.0\.0\.1:\d+/ml-latest-small\.zip "
        r"rejected, checksum mismatch: got zip sha256 [0-9a-f]{64}, ratings\.csv "
        r"sha256 [0-9a-f]{64}; expected zip sha256 0{64} or ratings\.csv sha256 1{64}; "
        r"nothing was cached",
    ):
        load_ratings("ml-latest-small", cache_dir=cache)
    assert cache_files(cache) == []

    assert main(["crosstab", "ml-latest-small", "--cache-dir", str(cache)]) == 2
    assert "checksum mismatch" in capsys.readouterr().err
    assert cache_files(cache) == []


def test_interrupted_download_leaves_nothing(serve, tmp_path, monkeypatch):
    served = build_zip(serve.root / "ml-latest-small.zip", ratings=RATINGS * 2000)
    point_at(monkeypatch, serve(Truncating) + "/ml-latest-small.zip", sha256(served.read_bytes()), None)
    cache = tmp_path / "cache"
    with pytest.raises(
        DataError,
        match=r"ml-latest-small: cannot download .* \(connection closed after \d+ of \d+ bytes\) "
        r"and there is no cached copy",
    ):
        load_ratings("ml-latest-small", cache_dir=cache)
    assert cache_files(cache) == []


def test_http_404_is_a_data_error(serve, tmp_path, monkeypatch):
    point_at(monkeypatch, serve() + "/missing.zip", "0" * 64, None)
    with pytest.raises(DataError, match=r"cannot download .*missing\.zip \(HTTP 404 "):
        load_ratings("ml-latest-small", cache_dir=tmp_path / "cache")


def test_offline_without_a_cached_copy_says_how_to_pass_a_local_file(tmp_path, monkeypatch, capsys):
    point_at(monkeypatch, closed_port_url(), "0" * 64, None)
    cache = tmp_path / "cache"
    pattern = (
        r"ml-latest-small: cannot download http://127\.0\.0\.1:\d+/ml-latest-small\.zip \(.+\) and there is "
        r"no cached copy; download it yourself from .* and pass the file \(xlcf crosstab "
        r"path/to/ml-latest-small\.zip\), pass a folder or ratings\.csv you already have, or put the zip at "
    )
    with pytest.raises(DataError, match=pattern):
        load_ratings("ml-latest-small", cache_dir=cache)
    assert cache_files(cache) == []
    with pytest.raises(DataError, match=r"ml-latest-small: no cached copy in .*; download it yourself"):
        resolve_source("ml-latest-small", cache_dir=cache, download=False)
    assert main(["crosstab", "ml-latest-small", "--cache-dir", str(cache)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("xlcf crosstab: error: ml-latest-small: cannot download") and err.count("\n") == 1


def test_corrupt_cached_copy_is_replaced(tmp_path, monkeypatch):
    served = build_zip(tmp_path / "served.zip")
    point_at(monkeypatch, served.as_uri(), sha256(served.read_bytes()), None)
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "ml-latest-small.zip").write_bytes(b"half a zip")
    assert len(load_ratings("ml-latest-small", cache_dir=cache)) == 3
    assert (cache / "ml-latest-small.zip").read_bytes() == served.read_bytes()


def test_a_local_path_wins_over_the_name(tmp_path, monkeypatch):
    point_at(monkeypatch, closed_port_url(), "0" * 64, None)
    folder = tmp_path / "ml-latest-small"
    folder.mkdir()
    (folder / "ratings.csv").write_text(RATINGS)
    monkeypatch.chdir(tmp_path)
    assert len(load_ratings("ml-latest-small", cache_dir=tmp_path / "cache")) == 3


def test_cache_folder_precedence(tmp_path, monkeypatch):
    monkeypatch.delenv("XLCF_CACHE_DIR", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert download.cache_folder() == tmp_path / "home" / ".cache" / "xlcf"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert download.cache_folder() == tmp_path / "xdg" / "xlcf"
    monkeypatch.setenv("XLCF_CACHE_DIR", str(tmp_path / "env"))
    assert download.cache_folder() == tmp_path / "env"
    assert download.cache_folder(tmp_path / "arg") == tmp_path / "arg"


def test_env_cache_dir_is_used_for_downloads(tmp_path, monkeypatch):
    served = build_zip(tmp_path / "served.zip")
    point_at(monkeypatch, served.as_uri(), sha256(served.read_bytes()), None)
    monkeypatch.setenv("XLCF_CACHE_DIR", str(tmp_path / "env-cache"))
    load_ratings("ml-latest-small")
    assert cache_files(tmp_path / "env-cache") == ["ml-latest-small.zip"]


def test_real_2018_ratings_verify_against_the_pinned_inner_hash(ml2018, tmp_path, monkeypatch):
    # The module's own ratings.csv hash (not overridden) accepts a zip holding the real 2018 ratings.
    served = tmp_path / "served.zip"
    with zipfile.ZipFile(served, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.write(ml2018 / "ratings.csv", "ml-latest-small/ratings.csv")
        archive.write(ml2018 / "movies.csv", "ml-latest-small/movies.csv")
    monkeypatch.setattr(download, "ML_LATEST_SMALL_URL", served.as_uri())
    path = download.fetch("ml-latest-small", cache_dir=tmp_path / "cache")
    assert path == tmp_path / "cache" / "ml-latest-small.zip"
    assert download.verify(path, download.ML_LATEST_SMALL_SHA256, download.ML_LATEST_SMALL_RATINGS_SHA256) is None
    assert len(load_titles("ml-latest-small", cache_dir=tmp_path / "cache")) == 9742
