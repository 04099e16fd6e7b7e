"""Benchmarks of xlcf (``xlcf bench``); each part in its own module, heavy imports inside the functions."""
