"""Data layer: load MovieLens-style ratings (file, folder, zip, or downloaded by name), encode ids,
split, and build the lesson's crosstab. Imports nothing but numpy/pandas and the standard library.

Names load on first use (PEP 562), so ``from xlcf.data import Vocabulary`` costs numpy only, not pandas."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

_HOME = {
    "lesson_crosstab": "embedded",
    "lesson_titles": "embedded",
    "EncodedRatings": "encoding",
    "Vocabulary": "encoding",
    "encode_ratings": "encoding",
    "split_ratings": "encoding",
    "DataWarning": "ratings",
    "load_ratings": "ratings",
    "load_titles": "ratings",
    "parse_ratings": "ratings",
    "RatingsSource": "source",
    "resolve_source": "source",
}

__all__ = [
    "DataWarning",
    "EncodedRatings",
    "RatingsSource",
    "Vocabulary",
    "crosstab",
    "crosstab_csv",
    "encode_ratings",
    "format_rating",
    "lesson_crosstab",
    "lesson_titles",
    "load_ratings",
    "load_titles",
    "parse_ratings",
    "resolve_source",
    "split_ratings",
    "top_ids",
]

# Bound now, not lazily: the function `crosstab` shares its name with the submodule, and importing the
# submodule would otherwise leave the package attribute pointing at the module (the module is pandas-free).
from xlcf.data.crosstab import crosstab, crosstab_csv, format_rating, top_ids  # noqa: E402

if TYPE_CHECKING:  # for type checkers and IDEs; at run time the names load lazily
    from xlcf.data.embedded import lesson_crosstab, lesson_titles
    from xlcf.data.encoding import EncodedRatings, Vocabulary, encode_ratings, split_ratings
    from xlcf.data.ratings import DataWarning, load_ratings, load_titles, parse_ratings
    from xlcf.data.source import RatingsSource, resolve_source


def __getattr__(name: str):
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module 'xlcf.data' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"xlcf.data.{home}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
