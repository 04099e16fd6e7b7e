"""``xlcf bench``: timings and quality of the engine against the baselines (:mod:`.runner`)."""
