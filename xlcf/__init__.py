"""xlcf: a spreadsheet front end for a collaborative-filtering engine (fast.ai lesson 5, grown up)."""

__version__ = "0.1.0"
