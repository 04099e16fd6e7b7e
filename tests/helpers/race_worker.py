"""A writer process for the overlapping-save tests: fits one sheet of each of N workbooks, in step with a
second worker that fits the other sheet of the same books.

    python -m tests.helpers.race_worker SHEET BARRIER_DIR SEED BOOK...

For each book both workers meet at a file barrier (``BARRIER_DIR/<i>.<sheet>``), sleep a random 0-30 ms (seeded),
then run the same read-modify-write as ``xlcf fit`` (``fit_workbook``), so their reads, fits and saves overlap.
One JSON line per book on stdout: ``{"book": i, "ok": true}`` or ``{"book": i, "ok": false, "error": "..."}``.
Torch is imported once per worker, so 50 pairs take seconds, not minutes.
"""

from __future__ import annotations

import json
import random
import sys
import time
from pathlib import Path

from xlcf.actions.fit import fit_workbook
from xlcf.errors import XlcfError

OTHER = {"dotprod": "bias", "bias": "dotprod"}


def _barrier(folder: Path, i: int, sheet: str) -> None:
    (folder / f"{i}.{sheet}").touch()
    other = folder / f"{i}.{OTHER[sheet]}"
    deadline = time.monotonic() + 120
    while not other.exists():
        if time.monotonic() > deadline:
            raise SystemExit(f"the other worker never reached book {i}")
        time.sleep(0.001)


def main(argv: list[str]) -> int:
    sheet, barrier, seed, *books = argv
    rng = random.Random(int(seed))
    overrides = {"optimizer": "als", "restarts": 0, "epochs": 5}
    for i, book in enumerate(books):
        _barrier(Path(barrier), i, sheet)
        time.sleep(rng.uniform(0, 0.03))
        try:
            fit_workbook(book, sheet, overrides=overrides, lock_timeout=60)
            print(json.dumps({"book": i, "ok": True}), flush=True)
        except XlcfError as err:
            print(json.dumps({"book": i, "ok": False, "error": str(err)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
