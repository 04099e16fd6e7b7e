"""Array and lookup functions: SUMPRODUCT, MMULT, TRANSPOSE, the SUMX... family, INDEX, MATCH, OFFSET,
COUNTIF/SUMIF/AVERAGEIF, COUNTBLANK, ROW(S), COLUMN(S) and the implicit-intersection operator ``@``."""

from __future__ import annotations

import math
import re

import numpy as np

from xlcf.formula.functions import ABSENT, _first_error_per_cell, _mark, _merge_kinds, gather_arg
from xlcf.formula.nodes import MAX_COL, MAX_ROW
from xlcf.formula.registry import VaryingShape, register
from xlcf.formula.store import RefVal, implicit_intersection
from xlcf.formula.values import (BLANK, BOOL, E_NA, E_REF, E_VALUE, ERR0, KIND, NUM, TEXT, V, as_numbers, errors,
                                 first, lo, parse_number, scalar)


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


@register("MMULT", "aa", 2)
def _mmult(ctx, a, b):
    bk = ctx.bk
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
    return V(bk.transpose12(a.num), None if a.kind is None else np.swapaxes(np.broadcast_to(a.kind, a.shape), 1, 2),
             None if a.text is None else np.swapaxes(a.texts(), 1, 2), True)


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
        kx = x.kinds().reshape(x.shape[0], 1, lx)
        ky = y.kinds().reshape(y.shape[0], 1, ly)
        both = (kx == NUM) & (ky == NUM)
        vals = bk.where(both, vals, 0.0)
        errs = [np.where(kx >= ERR0, kx, 0), np.where(ky >= ERR0, ky, 0)]
    return _with_first_error(V(bk.sum(vals, (1, 2))), errs, n)


@register("SUMXMY2", "aa", 2)
def _sumxmy2(ctx, x, y):
    if lo(ctx.bk):  # LibreOffice subtracts the arrays first: a blank counts as 0, text is #VALUE!
        from xlcf.formula.ops import arithmetic  # noqa: PLC0415

        if x.shape[1:] == y.shape[1:]:
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


_WILD = re.compile(r"~([*?~])|([*?])|([^*?~]+|~)")


def wildcard_regex(pattern: str) -> re.Pattern:
    """Excel's wildcards: ``*`` any run, ``?`` one character, ``~`` escapes them; case-insensitive, whole text."""
    out = []
    for esc, wild, lit in _WILD.findall(pattern):
        if esc:
            out.append(re.escape(esc))
        elif wild:
            out.append(".*" if wild == "*" else ".")
        else:
            out.append(re.escape(lit))
    return re.compile("".join(out), re.IGNORECASE | re.DOTALL)


def has_wildcards(text: str) -> bool:
    return any(ch in text for ch in "*?")


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
# Criteria: COUNTIF, SUMIF, AVERAGEIF


def criteria_mask(kinds: np.ndarray, nums: np.ndarray, texts, crit_kind: int, crit_num: float, crit_text):
    """Which cells a COUNTIF criterion selects: a number, TRUE/FALSE, or text such as ``">=3"``, ``"<>x"``,
    ``"ap*"``, ``""`` (blank cells), ``"<>"`` (non-blank cells)."""
    def text_of():
        return np.vectorize(lambda s: str(s).lower(), otypes=[object])(texts) if texts is not None else \
            np.full(kinds.shape, "", dtype=object)

    if crit_kind == NUM:
        return (kinds == NUM) & (nums == crit_num)
    if crit_kind == BOOL:
        return (kinds == BOOL) & (nums == crit_num)
    if crit_kind == BLANK:
        return (kinds == NUM) & (nums == 0)
    if crit_kind >= ERR0:
        return kinds == crit_kind
    s = str(crit_text)
    op = ""
    for cand in ("<=", ">=", "<>", "<", ">", "="):
        if s.startswith(cand):
            op, s = cand, s[len(cand):]
            break
    number = parse_number(s) if s.strip() else None
    if number is not None:
        with np.errstate(invalid="ignore"):
            if op in ("", "="):
                return (kinds == NUM) & (nums == number)
            if op == "<>":
                return ~((kinds == NUM) & (nums == number))
            cmp = {"<": nums < number, "<=": nums <= number, ">": nums > number, ">=": nums >= number}[op]
            return (kinds == NUM) & cmp
    if s.upper() in ("TRUE", "FALSE"):
        eq = (kinds == BOOL) & (nums == (1.0 if s.upper() == "TRUE" else 0.0))
        return ~eq if op == "<>" else eq
    is_empty = (kinds == BLANK) | ((kinds == TEXT) & (text_of() == ""))
    if s == "":
        if op == "":
            return is_empty
        if op == "=":
            return kinds == BLANK
        if op == "<>":
            return kinds != BLANK
        return np.zeros(kinds.shape, dtype=bool)
    low = text_of()
    if op in ("", "=", "<>"):
        if has_wildcards(s):
            rx = wildcard_regex(s)
            hit = np.vectorize(lambda t: rx.fullmatch(t) is not None, otypes=[bool])(low) & (kinds == TEXT)
        else:
            hit = (kinds == TEXT) & (low == s.lower())
        return ~hit if op == "<>" else hit
    target = s.lower()
    cmp = np.vectorize(lambda t: (t > target) - (t < target), otypes=[int])(low)
    sel = {"<": cmp < 0, "<=": cmp <= 0, ">": cmp > 0, ">=": cmp >= 0}[op]
    return (kinds == TEXT) & sel


def _criteria_reduce(ctx, rng, crit, values, mode: str) -> V:
    bk = ctx.bk
    if isinstance(rng, RefVal):
        full = rng.h * rng.w
        rv = gather_arg(ctx, rng)
    else:
        full = None
        rv = rng
    m = rv.shape[0]
    kinds = rv.kinds()
    nums = np.asarray(bk.to_numpy(rv.num), dtype=float)
    texts = rv.texts() if rv.text is not None else None
    crit = scalar(bk, None) if crit is None else crit
    ck = crit.kinds().reshape(-1)
    cn = np.asarray(bk.to_numpy(crit.num), dtype=float).reshape(-1)
    ct = crit.texts().reshape(-1)
    n = max(m, len(ck), ctx.n if (m > 1 or len(ck) > 1) else 1)
    sum_v = None
    if mode != "COUNT":
        if isinstance(values, RefVal):
            values = gather_arg(ctx, RefVal(values.sheet, values.top, values.left, rv.shape[1], rv.shape[2]))
        elif values is None:
            values = rv
        sum_v = values
    masks = np.zeros((n,) + rv.shape[1:], dtype=bool)
    cache: dict = {}
    extra = np.zeros(n)
    for i in range(n):
        ci = i if len(ck) > 1 else 0
        j = i if m > 1 else 0
        key = (j, int(ck[ci]), float(cn[ci]) if ck[ci] != TEXT else 0.0, str(ct[ci]))
        if key not in cache:
            mask = criteria_mask(kinds[j], nums[j], None if texts is None else texts[j], int(ck[ci]), cn[ci], ct[ci])
            blank_hit = criteria_mask(np.array([BLANK]), np.array([0.0]), None, int(ck[ci]), cn[ci], ct[ci])[0]
            cache[key] = (mask, blank_hit)
        masks[i], blank_hit = cache[key]
        if full is not None and blank_hit:
            extra[i] = full - rv.shape[1] * rv.shape[2]  # blank cells past the used area
    count = masks.sum((1, 2)) + extra
    if mode == "COUNT":
        return V(bk.asnum(count.reshape(-1, 1, 1)))
    sk = sum_v.kinds()
    use = masks & (np.broadcast_to(sk, masks.shape) == NUM)
    total = bk.sum(bk.where(use, sum_v.num, 0.0), (1, 2))
    if mode == "SUM":
        return V(total)
    cnt = use.sum((1, 2)).reshape(-1, 1, 1).astype(float)
    out = bk.safe_div(total, bk.asnum(cnt))
    from xlcf.formula.values import E_DIV0  # noqa: PLC0415

    return V(out, _mark(None, cnt == 0, E_DIV0))


@register("COUNTIF", "Rv", 2)
def _countif(ctx, rng, crit):
    return _criteria_reduce(ctx, rng, crit, None, "COUNT")


@register("SUMIF", "RvR", 2, 3)
def _sumif(ctx, rng, crit, values=None):
    return _criteria_reduce(ctx, rng, crit, values, "SUM")


@register("AVERAGEIF", "RvR", 2, 3)
def _averageif(ctx, rng, crit, values=None):
    return _criteria_reduce(ctx, rng, crit, values, "AVERAGE")


@register("COUNTBLANK", "R", 1)
def _countblank(ctx, rng):
    bk = ctx.bk
    if not isinstance(rng, RefVal):
        return errors(bk, E_VALUE, (ctx.n, 1, 1))
    v = gather_arg(ctx, rng)
    k = v.kinds()
    empty = (k == BLANK)
    if v.text is not None:
        empty = empty | ((k == TEXT) & (v.texts() == ""))
    extra = rng.h * rng.w - v.shape[1] * v.shape[2]
    return V(bk.asnum((empty.sum((1, 2)) + extra).reshape(-1, 1, 1).astype(float)))


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


__all__ = ["wildcard_regex", "criteria_mask", "has_wildcards", "math"]
