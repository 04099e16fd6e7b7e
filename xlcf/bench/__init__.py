"""The benchmark behind `xlcf bench`."""
