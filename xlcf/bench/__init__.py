"""``xlcf bench``: timings and quality of the engine against the baselines (:mod:`.runner`), and the second
press through ``xlcf serve`` (:mod:`.server`)."""
