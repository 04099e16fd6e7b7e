"""Array and lookup functions: SUMPRODUCT, MMULT, TRANSPOSE, the SUMX... family, INDEX, MATCH, OFFSET,
COUNTIF/SUMIF/AVERAGEIF, COUNTBLANK, ROW(S), COLUMN(S) and the implicit-intersection operator ``@``."""

from __future__ import annotations

import numpy as np

from xlcf.formula.criteria import has_wildcards, wildcard_regex
from xlcf.formula.functions import ABSENT, _first_error_per_cell, _merge_kinds
from xlcf.formula.nodes import MAX_COL, MAX_ROW
from xlcf.formula.ops import arithmetic
from xlcf.formula.registry import VaryingShape, register
from xlcf.formula.store import RefVal, implicit_intersection
from xlcf.formula.values import (
    BLANK,
    BOOL,
    E_NA,
    E_REF,
    E_VALUE,
    ERR0,
    KIND,
    NUM,
    TEXT,
    V,
    as_logical,
    as_numbers,
    errors,
    first,
    lo,
    scalar,
)


def _numeric(bk, v: V):
    """(numbers with every non-number as 0, per-element error kinds or None)."""
    if v.kind is None:
        return v.num, None
    k = v.kinds()
    num = bk.where(k == NUM, v.num, 0.0)
    err = np.where(k >= ERR0, k, 0)
    return num, (err if err.any() else None)


def _with_first_error(v: V, errs: list, n: int) -> V:
    errs = [e for e in errs if e is not None]
    if not errs:
        return v
    first_err = _first_error_per_cell(errs, n).reshape(-1, 1, 1)
    if not (first_err > 0).any():
        return v
    base = v.kinds() if v.kind is not None else np.full((n, 1, 1), NUM, dtype=KIND)
    v.kind = np.where(first_err > 0, first_err, base).astype(KIND)
    return v


@register("SUMPRODUCT", "a", 1, None)
def _sumproduct(ctx, *arrays):
    bk = ctx.bk
    shapes = {a.shape[1:] for a in arrays if a is not None}
    n = max(a.shape[0] for a in arrays if a is not None)
    if None in arrays or len(shapes) != 1:
        return errors(bk, E_VALUE, (n, 1, 1))
    prod = None
    errs = []
    for a in arrays:
        num, err = _numeric(bk, a)
        errs.append(err)
        prod = num if prod is None else prod * num
    return _with_first_error(V(bk.sum(prod, (1, 2))), errs, n)


def _all_numbers(v: V) -> np.ndarray:
    """Per cell of the block: does this array hold only numbers? (MMULT refuses blanks, text and booleans)."""
    if v.kind is None:
        return np.ones(v.shape[0], dtype=bool)
    return (v.kinds() == NUM).all((1, 2))


def block_grid(ctx):
    """(rows, cols) of the block when its cells fill a rectangle in reading order, else None."""
    grid = ctx.memo.get("grid", False)
    if grid is False:
        grid = None
        ur, uc = np.unique(ctx.rows), np.unique(ctx.cols)
        if (
            len(ur) * len(uc) == ctx.n
            and (ctx.rows == np.repeat(ur, len(uc))).all()
            and (ctx.cols == np.tile(uc, len(ur))).all()
        ):
            grid = (len(ur), len(uc))
        ctx.memo["grid"] = grid
    return grid


def _per_row(ref: RefVal, grid) -> RefVal | None:
    """A reference whose position moves with the cell's row only (``$B26:$F26`` copied over a grid): one row of
    it per grid row."""
    nrows, ncols = grid
    if ref.n == 1:
        return ref
    if (ref.left != ref.left[0]).any():
        return None
    top = ref.top.reshape(nrows, ncols)
    if (top != top[:, :1]).any():
        return None
    return RefVal(
        ref.sheet,
        top[:, 0].copy(),
        ref.left[:1].copy(),
        ref.h,
        ref.w,
        key=None if ref.key is None else (ref.key, "rows"),
    )


def _per_col(ref: RefVal, grid) -> RefVal | None:
    nrows, ncols = grid
    if ref.n == 1:
        return ref
    if (ref.top != ref.top[0]).any():
        return None
    left = ref.left.reshape(nrows, ncols)
    if (left != left[:1, :]).any():
        return None
    return RefVal(
        ref.sheet, ref.top[:1].copy(), left[0].copy(), ref.h, ref.w, key=None if ref.key is None else (ref.key, "cols")
    )


def _mmult_grid(ctx, a: RefVal, b: RefVal):
    """A grid of ``MMULT(row of A, column of B)`` cells is the matrix product A @ B: one GEMM for the block
    instead of one dot product per cell."""
    grid = block_grid(ctx)
    if grid is None or a.h != 1 or b.w != 1 or a.w != b.h:
        return None
    memo_key = ("mmult", a.key, b.key)
    factors = ctx.memo.get(memo_key) if a.key is not None and b.key is not None else None
    if factors is None:
        factors = (_per_row(a, grid), _per_col(b, grid))
        if a.key is not None and b.key is not None:
            ctx.memo[memo_key] = factors
    ra, cb = factors
    if ra is None or cb is None:
        return None
    va = ctx.store.gather(ra, memo=ctx.memo, key=ra.key)
    vb = ctx.store.gather(cb, memo=ctx.memo, key=cb.key)
    if va.kind is not None or vb.kind is not None:
        return None
    bk = ctx.bk
    k = a.w
    left = bk.reshape(va.num, (va.shape[0], k))
    right = bk.transpose12(bk.reshape(vb.num, (1, vb.shape[0], k)))[0]
    out = bk.matmul(left, right)  # (rows or 1, cols or 1)
    nrows, ncols = grid
    out = bk.broadcast_to(out, (nrows, ncols))
    return V(bk.reshape(out, (nrows * ncols, 1, 1)), None, None, True)


@register("MMULT", "AA", 2)
def _mmult(ctx, a, b):
    bk = ctx.bk
    if isinstance(a, RefVal) and isinstance(b, RefVal):
        fast = _mmult_grid(ctx, a, b)
        if fast is not None:
            return fast
    if isinstance(a, RefVal):
        a = ctx.store.gather(a, memo=ctx.memo, key=a.key)
    if isinstance(b, RefVal):
        b = ctx.store.gather(b, memo=ctx.memo, key=b.key)
    n = max(a.shape[0], b.shape[0])
    h, k = a.shape[1:]
    k2, w = b.shape[1:]
    if k != k2:
        return errors(bk, E_VALUE, (n, 1, 1))
    if h == 1 and w == 1:  # one cell of a product of a row and a column: a dot product per cell
        out = bk.sum(a.num * bk.transpose12(b.num), (1, 2))
    else:
        out = bk.matmul(a.num, b.num)
    ok = _all_numbers(a) & _all_numbers(b)
    if ok.all():
        return V(out, None, None, True)
    kind = np.where(np.broadcast_to(ok, (n,))[:, None, None], NUM, E_VALUE).astype(KIND)
    return V(out, np.broadcast_to(kind, (n, h, w)).copy(), None, True)


@register("TRANSPOSE", "a", 1)
def _transpose(ctx, a):
    bk = ctx.bk
    return V(
        bk.transpose12(a.num),
        None if a.kind is None else np.swapaxes(np.broadcast_to(a.kind, a.shape), 1, 2),
        None if a.text is None else np.swapaxes(a.texts(), 1, 2),
        True,
    )


def _pairs(ctx, x: V, y: V, fn):
    """SUMXMY2 and friends: pairs in reading order, skipped unless both are numbers; #N/A for unequal sizes."""
    bk = ctx.bk
    n = max(x.shape[0], y.shape[0])
    lx, ly = x.shape[1] * x.shape[2], y.shape[1] * y.shape[2]
    if lx != ly:
        return errors(bk, E_NA, (n, 1, 1))
    xs = bk.reshape(x.num, (x.shape[0], 1, lx))
    ys = bk.reshape(y.num, (y.shape[0], 1, ly))
    vals = fn(xs, ys)
    errs = []
    if x.kind is not None or y.kind is not None:
        # the kinds rarely change between evaluations (a ratings block's blanks): mask and errors kept while the
        # same kind arrays come back
        hit = ctx.memo.get("pairs")
        if hit is None or hit[0] is not x.kind or hit[1] is not y.kind:
            kx = x.kinds().reshape(x.shape[0], 1, lx)
            ky = y.kinds().reshape(y.shape[0], 1, ly)
            both = bk.mask((kx == NUM) & (ky == NUM))
            hit = (x.kind, y.kind, both, [np.where(kx >= ERR0, kx, 0), np.where(ky >= ERR0, ky, 0)])
            ctx.memo["pairs"] = hit
        vals = bk.where(hit[2], vals, 0.0)
        errs = hit[3]
    return _with_first_error(V(bk.sum(vals, (1, 2))), errs, n)


@register("SUMXMY2", "aa", 2)
def _sumxmy2(ctx, x, y):
    # LibreOffice subtracts the arrays first: a blank counts as 0, text is #VALUE!
    if lo(ctx.bk) and x.shape[1:] == y.shape[1:]:
        d = arithmetic(ctx.bk, "-", x, y)
        d.array = True
        return _pairs(ctx, d, V(d.num * 0.0), lambda a, b: a * a)
    return _pairs(ctx, x, y, lambda a, b: (a - b) * (a - b))


@register("SUMX2MY2", "aa", 2)
def _sumx2my2(ctx, x, y):
    return _pairs(ctx, x, y, lambda a, b: a * a - b * b)


@register("SUMX2PY2", "aa", 2)
def _sumx2py2(ctx, x, y):
    return _pairs(ctx, x, y, lambda a, b: a * a + b * b)


# ----------------------------------------------------------------------------------------------------------------
# INDEX, MATCH, OFFSET


def _host_ints(bk, v: V | None, default: int):
    """Integer arguments (truncated toward zero) on the host, with their error kinds."""
    if v is None or v is ABSENT:
        return np.array([default]), None
    nv = as_numbers(bk, v)
    x = np.asarray(bk.to_numpy(nv.num), dtype=float).reshape(-1)
    k = None if nv.kind is None else np.broadcast_to(nv.kind, nv.shape).reshape(-1)
    if k is not None:
        x = np.where(k >= ERR0, 0, x)
    return np.trunc(np.nan_to_num(x)).astype(np.int64), k


def _uniform(values: np.ndarray, what: str):
    """A shape argument must be the same for every cell of a block (else the block is evaluated cell by cell)."""
    if len(values) > 1 and (values != values[0]).any():
        raise VaryingShape(what)
    return int(values[0])


@register("INDEX", "rvvv", 2, 4)
def _index(ctx, arr, row=ABSENT, col=ABSENT, area=ABSENT):
    bk = ctx.bk
    if area not in (ABSENT, None):
        a, _ = _host_ints(bk, area, 1)
        if (a != 1).any():
            return errors(bk, E_REF, (max(ctx.n, len(a)), 1, 1))
    h, w = (arr.h, arr.w) if isinstance(arr, RefVal) else arr.shape[1:]
    r, rk = _host_ints(bk, row, 0)
    c, ck = _host_ints(bk, col, 0)
    if col is ABSENT and h == 1 and w > 1:  # INDEX(A1:E1, 3): one row, the single index picks a column
        r, rk, c, ck = np.zeros_like(r), None, r, rk
    narr = arr.n if isinstance(arr, RefVal) else arr.shape[0]
    n = max(narr, len(r), len(c))
    r, c = np.broadcast_to(r, (n,)), np.broadcast_to(c, (n,))
    bad_kind = np.zeros(n, dtype=KIND)
    for k in (rk, ck):
        if k is not None:
            kk = np.broadcast_to(k, (n,))
            bad_kind = np.where((bad_kind == 0) & (kk >= ERR0), kk, bad_kind).astype(KIND)
    bad_kind = np.where((bad_kind == 0) & ((r < 0) | (c < 0)), E_VALUE, bad_kind)
    bad_kind = np.where((bad_kind == 0) & ((r > h) | (c > w)), E_REF, bad_kind).astype(KIND)
    whole_rows = _uniform(r == 0, "INDEX row 0") if n else False
    whole_cols = _uniform(c == 0, "INDEX column 0") if n else False
    hh = h if whole_rows else 1
    ww = w if whole_cols else 1
    r0 = np.clip(np.maximum(r, 1) - 1, 0, h - 1)
    c0 = np.clip(np.maximum(c, 1) - 1, 0, w - 1)
    if whole_rows:
        r0 = np.zeros_like(r0)
    if whole_cols:
        c0 = np.zeros_like(c0)
    if isinstance(arr, RefVal):
        ref = RefVal(arr.sheet, np.broadcast_to(arr.top, (n,)) + r0, np.broadcast_to(arr.left, (n,)) + c0, hh, ww)
        if not bad_kind.any():
            return ref
        v = ctx.store.gather(ref)
    else:
        bi = np.arange(n) if arr.shape[0] == n else np.zeros(n, dtype=np.int64)
        ri = r0[:, None, None] + np.arange(hh)[None, :, None]
        ci = c0[:, None, None] + np.arange(ww)[None, None, :]
        b3 = bi[:, None, None]
        num = arr.num[bk.index(b3), bk.index(ri), bk.index(ci)]
        kind = None if arr.kind is None else arr.kinds()[b3, ri, ci]
        text = None if arr.text is None else arr.texts()[b3, ri, ci]
        v = V(num, kind, text, hh * ww > 1)
        if not bad_kind.any():
            return v
    base = v.kinds()
    v.kind = np.where(bad_kind[:, None, None] > 0, bad_kind[:, None, None], base).astype(KIND)
    return v


def _key(kind: int, num: float, text) -> tuple | None:
    if kind == NUM:
        return ("n", float(num))
    if kind == BOOL:
        return ("b", bool(num))
    if kind == TEXT:
        return ("t", str(text).lower())
    return None


@register("MATCH", "vav", 2, 3)
def _match(ctx, x, arr, mtype=ABSENT):
    bk = ctx.bk
    types, tk = _host_ints(bk, mtype if mtype is not ABSENT else None, 1 if mtype is ABSENT else 0)
    if arr.shape[1] > 1 and arr.shape[2] > 1:
        return errors(bk, E_NA, (max(ctx.n, x.shape[0]), 1, 1))
    m, length = arr.shape[0], arr.shape[1] * arr.shape[2]
    ak = arr.kinds().reshape(m, length)
    an = np.asarray(bk.to_numpy(arr.num), dtype=float).reshape(m, length)
    at = arr.texts().reshape(m, length) if arr.text is not None else None
    xk = x.kinds().reshape(-1)
    xn = np.asarray(bk.to_numpy(x.num), dtype=float).reshape(-1)
    xt = x.texts().reshape(-1) if x.text is not None else None
    n = max(m, len(xk), len(types))
    out = np.zeros(n)
    kind = np.full(n, NUM, dtype=KIND)
    tables: dict[int, dict] = {}
    for i in range(n):
        j = i if m > 1 else 0
        xi = i if len(xk) > 1 else 0
        t = int(np.sign(types[i if len(types) > 1 else 0]))
        k = int(xk[xi])
        if k >= ERR0:
            kind[i] = k
            continue
        if tk is not None and tk[min(i, len(tk) - 1)] >= ERR0:
            kind[i] = tk[min(i, len(tk) - 1)]
            continue
        text = xt[xi] if xt is not None else None
        pos = None
        if k == BLANK:
            pos = None
        elif t == 0 and k == TEXT and has_wildcards(str(text)):
            rx = wildcard_regex(str(text))
            hits = [p for p in range(length) if ak[j, p] == TEXT and rx.fullmatch(str(at[j, p]))]
            pos = hits[0] if hits else None
        elif t == 0:
            table = tables.get(j)
            if table is None:
                table = {}
                for p in range(length):
                    key = _key(int(ak[j, p]), an[j, p], at[j, p] if at is not None else None)
                    if key is not None and key not in table:
                        table[key] = p
                tables[j] = table
            pos = table.get(_key(k, xn[xi], text))
        else:
            pos = _approximate(ak[j], an[j], at[j] if at is not None else None, k, xn[xi], text, t)
        if pos is None:
            kind[i] = E_NA
        else:
            out[i] = pos + 1
    return V(bk.asnum(out.reshape(-1, 1, 1)), None if (kind == NUM).all() else kind.reshape(-1, 1, 1))


def _approximate(kinds, nums, texts, k: int, x: float, text, direction: int):
    """MATCH type 1 (ascending: the last value <= x) or -1 (descending: the last value >= x), among the values of
    the lookup value's type; the scan stops at the first value past x, as a search of sorted data does."""
    group = TEXT if k == TEXT else (BOOL if k == BOOL else NUM)
    best = None
    for p in range(len(kinds)):
        if kinds[p] != group:
            continue
        if group == TEXT:
            a, b = str(texts[p]).lower(), str(text).lower()
            cmp = (a > b) - (a < b)
        else:
            cmp = int(nums[p] > x) - int(nums[p] < x)
        if (direction > 0 and cmp <= 0) or (direction < 0 and cmp >= 0):
            best = p
        else:
            break
    return best


def _table_lookup(ctx, x, table: V, index, approx, vertical: bool) -> V:
    """VLOOKUP / HLOOKUP: MATCH in the first column (row), then the value ``index`` columns (rows) along."""
    bk = ctx.bk
    h, w = table.shape[1:]
    span = w if vertical else h
    sl = (slice(None), slice(None), slice(0, 1)) if vertical else (slice(None), slice(0, 1), slice(None))
    keys = V(
        table.num[sl],
        None if table.kind is None else table.kinds()[sl],
        None if table.text is None else table.texts()[sl],
        True,
    )
    if approx is ABSENT:
        mtype = scalar(bk, 1.0)
    else:
        truth = as_logical(bk, scalar(bk, False) if approx is None else approx)
        mtype = V(truth.num, truth.kind)
    pos = _match(ctx, x, keys, mtype)
    p_idx, pk = _host_ints(bk, pos, 0)
    j_idx, jk = _host_ints(bk, index, 1)
    n = max(len(p_idx), len(j_idx), table.shape[0])
    p_idx, j_idx = np.broadcast_to(p_idx, (n,)), np.broadcast_to(j_idx, (n,))
    bad = np.zeros(n, dtype=KIND)
    for k in (pk, jk):
        if k is not None:
            kk = np.broadcast_to(k, (n,))
            bad = np.where((bad == 0) & (kk >= ERR0), kk, bad).astype(KIND)
    bad = np.where((bad == 0) & (j_idx < 1), E_VALUE, bad)
    bad = np.where((bad == 0) & (j_idx > span), E_REF, bad).astype(KIND)
    along = np.clip(p_idx - 1, 0, (h if vertical else w) - 1)
    across = np.clip(j_idx - 1, 0, span - 1)
    r, c = (along, across) if vertical else (across, along)
    b = np.arange(n) if table.shape[0] == n else np.zeros(n, dtype=np.int64)
    num = table.num[bk.index(b), bk.index(r), bk.index(c)]
    kind = table.kinds()[b, r, c].copy()
    text = None if table.text is None else table.texts()[b, r, c].reshape(n, 1, 1)
    kind = np.where(bad > 0, bad, kind).astype(KIND)
    return V(bk.reshape(num, (n, 1, 1)), None if (kind == NUM).all() else kind.reshape(n, 1, 1), text, False)


@register("VLOOKUP", "vavv", 3, 4)
def _vlookup(ctx, x, table, index, approx=ABSENT):
    return _table_lookup(ctx, x, table, index, approx, True)


@register("HLOOKUP", "vavv", 3, 4)
def _hlookup(ctx, x, table, index, approx=ABSENT):
    return _table_lookup(ctx, x, table, index, approx, False)


@register("OFFSET", "Rvvvv", 3, 5)
def _offset(ctx, ref, rows, cols, height=ABSENT, width=ABSENT):
    bk = ctx.bk
    if not isinstance(ref, RefVal):
        return errors(bk, E_VALUE, (ctx.n, 1, 1))
    dr, rk = _host_ints(bk, rows, 0)
    dc, ck = _host_ints(bk, cols, 0)
    hs, hk = _host_ints(bk, None if height is ABSENT else height, ref.h)
    ws, wk = _host_ints(bk, None if width is ABSENT else width, ref.w)
    n = max(ref.n, len(dr), len(dc))
    h, w = _uniform(hs, "OFFSET height"), _uniform(ws, "OFFSET width")
    top = np.broadcast_to(ref.top, (n,)) + np.broadcast_to(dr, (n,))
    left = np.broadcast_to(ref.left, (n,)) + np.broadcast_to(dc, (n,))
    bad = (top < 1) | (left < 1) | (top + h - 1 > MAX_ROW) | (left + w - 1 > MAX_COL) | (h < 1) | (w < 1)
    err = _merge_kinds(*(None if k is None else k.reshape(-1, 1, 1) for k in (rk, ck, hk, wk)))
    if not bad.any() and err is None:
        return RefVal(ref.sheet, top, left, h, w)
    if bad.all() or h < 1 or w < 1:
        return errors(bk, E_REF, (n, 1, 1))
    safe = RefVal(ref.sheet, np.where(bad, 1, top), np.where(bad, 1, left), h, w)
    v = ctx.store.gather(safe)
    kind = np.where(bad[:, None, None], E_REF, v.kinds())
    if err is not None:
        kind = np.where(np.broadcast_to(err, (n, 1, 1)) >= ERR0, err, kind)
    v.kind = kind.astype(KIND)
    return v


# ----------------------------------------------------------------------------------------------------------------
# Positions


@register("ROW", "R", 0, 1)
def _row(ctx, ref=None):
    rows = ctx.rows if ref is None else (ref.top if isinstance(ref, RefVal) else None)
    if rows is None:
        return errors(ctx.bk, E_VALUE, (ctx.n, 1, 1))
    return V(ctx.bk.asnum(np.asarray(rows, dtype=float).reshape(-1, 1, 1)))


@register("COLUMN", "R", 0, 1)
def _column(ctx, ref=None):
    cols = ctx.cols if ref is None else (ref.left if isinstance(ref, RefVal) else None)
    if cols is None:
        return errors(ctx.bk, E_VALUE, (ctx.n, 1, 1))
    return V(ctx.bk.asnum(np.asarray(cols, dtype=float).reshape(-1, 1, 1)))


@register("ROWS", "r", 1)
def _rows(ctx, x):
    h = x.h if isinstance(x, RefVal) else x.shape[1]
    return scalar(ctx.bk, float(h))


@register("COLUMNS", "r", 1)
def _columns(ctx, x):
    w = x.w if isinstance(x, RefVal) else x.shape[2]
    return scalar(ctx.bk, float(w))


@register("SINGLE", "r", 1)
def _single(ctx, x):
    if isinstance(x, RefVal):
        return implicit_intersection(ctx.store, x, ctx.rows, ctx.cols)
    return first(ctx.bk, x)


__all__ = ["block_grid"]
