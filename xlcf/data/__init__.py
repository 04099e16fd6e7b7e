"""Data layer: load MovieLens-style ratings (file, folder, zip, or downloaded by name), encode ids,
split, and build the lesson's crosstab. Imports nothing but numpy/pandas and the standard library."""

from xlcf.data.crosstab import crosstab, crosstab_csv, format_rating, top_ids
from xlcf.data.embedded import lesson_crosstab, lesson_titles
from xlcf.data.encoding import EncodedRatings, Vocabulary, encode_ratings, split_ratings
from xlcf.data.ratings import DataWarning, load_ratings, load_titles, parse_ratings
from xlcf.data.source import RatingsSource, resolve_source

__all__ = [
    "load_ratings", "load_titles", "Vocabulary", "encode_ratings", "EncodedRatings", "split_ratings",
    "crosstab", "lesson_crosstab", "lesson_titles", "resolve_source",
    "RatingsSource", "parse_ratings", "DataWarning", "top_ids", "crosstab_csv", "format_rating",
]
