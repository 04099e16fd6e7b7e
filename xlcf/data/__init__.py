"""Data layer: load MovieLens-style ratings (file, folder, zip, or downloaded by name), encode ids,
split, and build the lesson's crosstab. Imports nothing but numpy/pandas and the standard library."""

from xlcf.data.crosstab import crosstab, crosstab_csv, format_rating, top_ids
from xlcf.data.embedded import lesson_crosstab, lesson_titles
from xlcf.data.encoding import EncodedRatings, Vocabulary, encode_ratings, split_ratings
from xlcf.data.ratings import DataWarning, load_ratings, load_titles, parse_ratings
from xlcf.data.source import RatingsSource, resolve_source

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
