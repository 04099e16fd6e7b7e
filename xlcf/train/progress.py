"""The training progress bar: a tqdm bar on stderr that costs (almost) nothing per epoch.

A sheet-sized epoch takes tens of microseconds, so a bar that redraws every epoch would spend more time
writing to the terminal than training. This bar redraws at most every ``INTERVAL`` seconds (tqdm's
``mininterval``, with ``miniters`` kept at 1 so no epoch count has to be guessed), formats the RMSE
postfix only when a redraw is due, and is shown only when stderr is a terminal."""

from __future__ import annotations

import sys
import time

INTERVAL = 0.1  # seconds between redraws


class Progress:
    """``Progress(total, desc)``; ``update(train_rmse, valid_rmse)`` once per epoch; ``close()``.

    A no-op when ``enabled`` is False or stderr is not a terminal (tqdm is then not even imported)."""

    def __init__(self, total: int, desc: str, *, enabled: bool = True, file=None):
        self._bar = None
        self._pending = 0
        self._next = 0.0
        stream = sys.stderr if file is None else file
        if not enabled or not _is_tty(stream):
            return
        from tqdm.auto import tqdm

        # miniters=1 and mininterval only: tqdm then checks the clock on every update (a few hundred
        # nanoseconds) and redraws when INTERVAL has passed; its adaptive miniters would skip redraws.
        self._bar = tqdm(
            total=total,
            desc=desc,
            unit="epoch",
            file=stream,
            leave=False,
            mininterval=INTERVAL,
            miniters=1,
            dynamic_ncols=True,
        )

    def update(self, train_rmse: float | None = None, valid_rmse: float | None = None) -> None:
        if self._bar is None:
            return
        self._pending += 1
        now = time.monotonic()
        if now < self._next:
            return
        self._next = now + INTERVAL
        if train_rmse is not None:
            text = f"train={train_rmse:.4f}" + ("" if valid_rmse is None else f", valid={valid_rmse:.4f}")
            self._bar.set_postfix_str(text, refresh=False)
        self._bar.update(self._pending)
        self._pending = 0

    def close(self) -> None:
        if self._bar is None:
            return
        if self._pending:
            self._bar.update(self._pending)
            self._pending = 0
        self._bar.close()
        self._bar = None


def _is_tty(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # closed or a file-like object without isatty
        return False
