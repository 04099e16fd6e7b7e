"""Where evaluation reads and writes cell values: one dense grid per sheet, read by batched gathers.

A reference evaluated for a block of n cells is a :class:`RefVal` — per cell the top-left corner of a range of a
fixed height and width. Reading it is one gather with per-cell index arrays (never a loop over cells), into a
(N, h, w) value. Cells outside a sheet's used area are blank.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from xlcf.errors import FormulaError
from xlcf.formula.values import (
    BLANK,
    BOOL,
    E_REF,
    E_VALUE,
    KIND,
    NUM,
    TEXT,
    V,
    classify,
    errors,
)

MAX_GATHER = 50_000_000  # elements one reference may read for one block (a whole column times many cells)


@dataclass
class RefVal:
    """A reference for a block: ``top``/``left`` are int arrays of shape (N,) (N = 1 when all cells share it)."""

    sheet: str
    top: np.ndarray
    left: np.ndarray
    h: int
    w: int
    key: object = None  # set on references read from the formula's text: their index arrays are memoised

    def __post_init__(self):
        if len(self.top) != len(self.left):
            n = max(len(self.top), len(self.left))
            self.top = np.broadcast_to(self.top, (n,))
            self.left = np.broadcast_to(self.left, (n,))

    @property
    def n(self) -> int:
        return len(self.top)


class Grid:
    """The values of one sheet: flat row-major arrays over rows 1..nrows, columns 1..ncols."""

    def __init__(self, bk, nrows: int, ncols: int, num, kind: np.ndarray, text: np.ndarray | None, kver=None):
        self.bk, self.nrows, self.ncols = bk, nrows, ncols
        self.num, self.kind, self.text = num, kind, text
        # bumped whenever kinds or text change; grids sharing the kind array share the counter. Lets a gather
        # reuse the kinds it read last time when only numbers changed (every pass of the solver).
        self.kver = kver if kver is not None else [0]

    @classmethod
    def from_cells(cls, bk, nrows: int, ncols: int, cells: dict[tuple[int, int], object]) -> Grid:
        nrows, ncols = max(nrows, 1), max(ncols, 1)
        num = np.zeros(nrows * ncols)
        kind = np.zeros(nrows * ncols, dtype=KIND)
        text = None
        lo_flavour = getattr(bk, "flavor", "excel") == "libreoffice"
        numbers_at, numbers = [], []
        for (r, c), value in cells.items():
            if r > nrows or c > ncols:
                continue
            i = (r - 1) * ncols + (c - 1)
            if type(value) is float and value == value:  # most cells: a plain number (NaN is not one)
                numbers_at.append(i)
                numbers.append(value)
                continue
            k, x, t = classify(value)
            if k == BOOL and lo_flavour:
                k = NUM
            kind[i] = k
            num[i] = x
            if t is not None:
                if text is None:
                    text = np.full(nrows * ncols, "", dtype=object)
                text[i] = t
        if numbers_at:
            at = np.array(numbers_at)
            num[at] = numbers
            kind[at] = NUM
        return cls(bk, nrows, ncols, bk.asnum(num) if bk.name != "numpy" else num, kind, text)

    def copy(self, bk=None) -> Grid:
        bk = bk or self.bk
        num = bk.asnum(self.bk.to_numpy(self.num)) if bk is not self.bk else bk.copy(self.num)
        return Grid(bk, self.nrows, self.ncols, num, self.kind.copy(), None if self.text is None else self.text.copy())


class Store:
    """The grids of every sheet, with batched reads (:meth:`gather`) and writes (:meth:`put`)."""

    def __init__(self, bk, grids: dict[str, Grid]):
        self.bk = bk
        self.grids = grids

    def copy(self, bk=None) -> Store:
        bk = bk or self.bk
        return Store(bk, {name: g.copy(bk) for name, g in self.grids.items()})

    def grid(self, sheet: str) -> Grid:
        g = self.grids.get(sheet)
        if g is None:
            raise FormulaError(f"the workbook has no sheet '{sheet}'", field=sheet)
        return g

    # -- reading ----------------------------------------------------------------------------------------------
    def indices(self, ref: RefVal, clip: bool = False):
        """(flat index, valid mask, h, w) of a reference's cells; ``clip`` drops rows/columns past the used area
        (for functions that ignore blank cells, so ``SUM(A:A)`` reads only the used rows)."""
        g = self.grid(ref.sheet)
        h, w = ref.h, ref.w
        if ref.n == 1 and h == 1 and w == 1:  # one cell for one formula cell: the common case of a chain
            r, c = int(ref.top[0]), int(ref.left[0])
            if 1 <= r <= g.nrows and 1 <= c <= g.ncols:
                return np.array([[[(r - 1) * g.ncols + (c - 1)]]]), None, 1, 1
            return np.zeros((1, 1, 1), dtype=np.int64), np.zeros((1, 1, 1), dtype=bool), 1, 1
        if clip:
            h = max(1, min(h, g.nrows - int(ref.top.min()) + 1))
            w = max(1, min(w, g.ncols - int(ref.left.min()) + 1))
        if ref.n * h * w > MAX_GATHER:
            raise FormulaError(
                f"a reference reads {ref.n * h * w:,} cells at once (more than {MAX_GATHER:,}); "
                f"use a smaller range than whole rows or columns",
                field="range",
            )
        rows = ref.top[:, None, None] + np.arange(h)[None, :, None]
        cols = ref.left[:, None, None] + np.arange(w)[None, None, :]
        valid = (rows >= 1) & (rows <= g.nrows) & (cols >= 1) & (cols <= g.ncols)
        flat = (rows - 1) * g.ncols + (cols - 1)
        if not valid.all():
            return np.broadcast_to(np.where(valid, flat, 0), (ref.n, h, w)), valid, h, w
        return np.broadcast_to(flat, (ref.n, h, w)), None, h, w

    def gather(self, ref: RefVal, clip: bool = False, memo: dict | None = None, key=None) -> V:
        """The values of a reference, (N, h, w)."""
        g = self.grid(ref.sheet)
        mk = (key, clip)
        cached = memo.get(mk) if memo is not None and key is not None else None
        if cached is None:
            flat, valid, _h, _w = self.indices(ref, clip)
            cached = (flat, valid, self.bk.index(flat))
            if memo is not None and key is not None:
                memo[mk] = cached
        flat, valid, bidx = cached
        num = self.bk.take(g.num, bidx)
        if valid is not None:
            num = self.bk.where(valid, num, 0.0)
        kinds = memo.get((mk, "kinds")) if memo is not None and key is not None else None
        if kinds is None or kinds[0] is not g.kind or kinds[1] != g.kver[0]:
            kind = g.kind[flat]
            if valid is not None:
                kind = np.where(valid, kind, BLANK).astype(KIND)
            all_num = (kind == NUM).all()
            text = None
            if not all_num and g.text is not None and (kind == TEXT).any():
                text = g.text[flat]
            kinds = (g.kind, g.kver[0], None if all_num else kind, text)
            if memo is not None and key is not None:
                memo[(mk, "kinds")] = kinds
        return V(num, kinds[2], kinds[3], True)

    # -- writing ----------------------------------------------------------------------------------------------
    def put(self, sheet: str, rows: np.ndarray, cols: np.ndarray, v: V, memo: dict | None = None, key=None) -> None:
        """Write one value per cell: ``v`` has shape (n, 1, 1) or (1, 1, 1); blank results are stored as 0 (a
        formula that points at an empty cell shows 0)."""
        g = self.grid(sheet)
        n = len(rows)
        both = memo.get(key) if memo is not None and key is not None else None
        if both is None:
            flat = (rows - 1) * g.ncols + (cols - 1)
            both = (flat, self.bk.index(flat))
            if memo is not None and key is not None:
                memo[key] = both
        flat, cached = both
        num = self.bk.reshape(v.num, (-1,))
        if num.shape[0] != n:
            num = self.bk.broadcast_to(num, (n,))
        g.num = self.bk.put(g.num, cached, num)
        if v.kind is None and v.text is None:
            # all numbers: the kinds only need writing when the cells held something else before
            done = memo is not None and key is not None and memo.get((key, "numbers"))
            if not done:
                g.kind[flat] = NUM
                g.kver[0] += 1
                if memo is not None and key is not None:
                    memo[(key, "numbers")] = True
            return
        if memo is not None and key is not None:
            memo[(key, "numbers")] = False
        kind = np.broadcast_to(v.kinds().reshape(-1), (n,))
        blank = kind == BLANK
        if blank.any():
            kind = np.where(blank, NUM, kind).astype(KIND)
        g.kind[flat] = kind
        g.kver[0] += 1
        if v.text is not None:
            if g.text is None:
                g.text = np.full(g.nrows * g.ncols, "", dtype=object)
            g.text[flat] = np.broadcast_to(v.texts().reshape(-1), (n,))


# ----------------------------------------------------------------------------------------------------------------
# References in a value context


def implicit_intersection(store: Store, ref: RefVal, rows: np.ndarray, cols: np.ndarray) -> V:
    """A range where one value is expected, outside an array formula: the cell of the range in the formula's row
    (a one-column range) or column (a one-row range), else #VALUE! — Excel's implicit intersection."""
    if ref.h == 1 and ref.w == 1:
        return _single(store.gather(ref))
    n = max(len(rows), ref.n)
    top = np.broadcast_to(ref.top, (n,))
    left = np.broadcast_to(ref.left, (n,))
    r = np.broadcast_to(rows, (n,))
    c = np.broadcast_to(cols, (n,))
    ok = np.ones(n, dtype=bool)
    pick_r, pick_c = top.copy(), left.copy()
    if ref.h > 1:
        ok &= (r >= top) & (r < top + ref.h)
        pick_r = np.where(ok, r, top)
    if ref.w > 1:
        ok &= (c >= left) & (c < left + ref.w)
        pick_c = np.where(ok, c, left)
    v = _single(store.gather(RefVal(ref.sheet, pick_r, pick_c, 1, 1)))
    if ok.all():
        return v
    bad = errors(store.bk, E_VALUE, (n, 1, 1))
    kind = np.where(ok[:, None, None], v.kinds(), E_VALUE).astype(KIND)
    return V(store.bk.where(ok[:, None, None], v.num, bad.num), kind, None if v.text is None else v.texts(), False)


def _single(v: V) -> V:
    v.array = False
    return v


def ref_error(bk, n: int) -> V:
    return errors(bk, E_REF, (n, 1, 1))


__all__ = ["MAX_GATHER", "Grid", "RefVal", "Store", "implicit_intersection", "ref_error"]
