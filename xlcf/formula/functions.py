"""Worksheet functions: logic, information, maths, aggregates and the volatile ones.

Aggregates follow Excel's documented argument rules: in a range or an array only numbers count (blank cells, text
and TRUE/FALSE are skipped; an error is returned); a value typed directly as an argument is converted (TRUE is
1, ``"2"`` is 2, other text is #VALUE!).
"""

from __future__ import annotations

import datetime as _dt
import math

import numpy as np

from xlcf.formula.ops import power
from xlcf.formula.registry import register
from xlcf.formula.store import RefVal
from xlcf.formula.values import (
    BLANK,
    BOOL,
    E_DIV0,
    E_NA,
    E_NUM,
    E_VALUE,
    ERR0,
    KIND,
    NUM,
    TEXT,
    V,
    as_logical,
    as_numbers,
    bool_kind,
    broadcast,
    errors,
    first_error,
    lo,
    parse_number,
    scalar,
)

ABSENT = object()
E_VALUE_KIND = E_VALUE  # an argument left out entirely (IF(c, x)), as opposed to an empty one (IF(c, x, ))
_EPOCH = _dt.datetime(1899, 12, 30)


def gather_arg(ctx, a):
    """A reference argument read whole (trailing blank rows/columns past the used area left out)."""
    return ctx.store.gather(a, clip=True, memo=ctx.memo, key=a.key)


def _bool_v(bk, num, kind=None) -> V:
    b = bool_kind(bk)
    k = np.full((1, 1, 1), b, dtype=KIND) if kind is None else np.where(kind >= ERR0, kind, b).astype(KIND)
    return V(bk.tofloat(num), k)


def err_host(v: V) -> np.ndarray:
    return v.kinds() >= ERR0


def err_mask(bk, v: V):
    """Where a value is an error; in the differentiable pass also where arithmetic gave NaN."""
    host = err_host(v)
    if bk.tracks_errors:
        return host
    return bk.mask(host) | bk.isnan(v.num)


# ----------------------------------------------------------------------------------------------------------------
# Logic


@register("IF", "vvv", 2, 3)
def _if(ctx, cond, t=ABSENT, f=ABSENT):
    bk = ctx.bk
    t = scalar(bk, 0.0) if t is None else t
    f = scalar(bk, False) if f is ABSENT else (scalar(bk, 0.0) if f is None else f)
    c = as_logical(bk, cond)
    c, t, f = broadcast(bk, c, t, f)
    take = c.num != 0
    num = bk.where(take, t.num, f.num)
    kind = text = None
    if t.kind is not None or f.kind is not None or t.text is not None or f.text is not None:
        host = bk.to_numpy(take) if not bk.tracks_errors else take
        kind = np.where(host, t.kinds(), f.kinds()).astype(KIND)
        if t.text is not None or f.text is not None:
            text = np.where(host, t.texts(), f.texts())
    if c.kind is not None:
        ck = c.kinds()
        kind = np.where(ck >= ERR0, ck, NUM if kind is None else kind).astype(KIND)
    return V(num, kind, text, t.array or f.array or c.array)


@register("IFERROR", "vv", 2)
def _iferror(ctx, value, alt):
    bk = ctx.bk
    alt = scalar(bk, 0.0) if alt is None else alt
    value, alt = broadcast(bk, value, alt)
    bad = err_mask(bk, value)
    num = bk.where(bad, alt.num, value.num)
    host = err_host(value)
    if value.kind is None and alt.kind is None:
        return V(num, None, None, value.array)
    kind = np.where(host, alt.kinds(), value.kinds()).astype(KIND)
    text = None
    if value.text is not None or alt.text is not None:
        text = np.where(host, alt.texts(), value.texts())
    return V(num, kind, text, value.array)


@register("IFNA", "vv", 2)
def _ifna(ctx, value, alt):
    bk = ctx.bk
    alt = scalar(bk, 0.0) if alt is None else alt
    value, alt = broadcast(bk, value, alt)
    na = value.kinds() == E_NA
    num = bk.where(na, alt.num, value.num)
    kind = np.where(na, alt.kinds(), value.kinds()).astype(KIND)
    text = np.where(na, alt.texts(), value.texts()) if (value.text is not None or alt.text is not None) else None
    return V(num, None if (kind == NUM).all() else kind, text, value.array)


def _logical_items(ctx, args):
    """(truth num, used mask, error kinds) per argument for AND/OR/XOR."""
    bk = ctx.bk
    for a in args:
        if a is None:
            continue
        if isinstance(a, RefVal):
            a = gather_arg(ctx, a)
        if a.array:
            k = a.kinds()
            used = (k == NUM) | (k == BOOL)
            yield a.num != 0, used, np.where(k >= ERR0, k, 0)
        else:
            lv = as_logical(bk, a)
            k = lv.kinds()
            yield lv.num != 0, k < ERR0, np.where(k >= ERR0, k, 0)


def _first_error_per_cell(errs: list[np.ndarray], n: int) -> np.ndarray:
    out = np.zeros(n, dtype=KIND)
    for e in errs:
        flat = np.broadcast_to(e, (max(n, e.shape[0]),) + e.shape[1:]).reshape(max(n, e.shape[0]), -1)
        has = flat > 0
        first = flat[np.arange(flat.shape[0]), has.argmax(1)]
        cand = np.where(has.any(1), first, 0)
        cand = np.broadcast_to(cand, out.shape) if cand.shape[0] != out.shape[0] else cand
        out = np.where(out > 0, out, cand).astype(KIND)
    return out


def _logical(ctx, args, mode: str) -> V:
    bk = ctx.bk
    items = list(_logical_items(ctx, args))
    n = max([ctx.n] + [np.shape(u)[0] for _, u, _ in items])
    n = 1 if all(np.shape(u)[0] == 1 for _, u, _ in items) else n
    count_true = 0
    count_used = np.zeros(n)
    for truth, used, _ in items:
        t = bk.where(used, bk.tofloat(truth), 0.0)
        count_true = count_true + bk.sum(t, (1, 2))
        count_used = count_used + used.sum((1, 2)).reshape(-1, 1, 1)[:, 0, 0]
    err = _first_error_per_cell([e for _, _, e in items], n)
    if mode == "AND":
        res = count_true == bk.asnum(count_used.reshape(-1, 1, 1))
    elif mode == "OR":
        res = count_true > 0
    else:  # XOR: an odd number of TRUE
        res = bk.tofloat(count_true) % 2 == 1
    kind = np.where(err > 0, err, np.where(count_used == 0, E_VALUE, bool_kind(bk))).astype(KIND).reshape(-1, 1, 1)
    return V(bk.tofloat(res), kind, None, False)


@register("AND", "r", 1, None)
def _and(ctx, *args):
    return _logical(ctx, args, "AND")


@register("OR", "r", 1, None)
def _or(ctx, *args):
    return _logical(ctx, args, "OR")


@register("XOR", "r", 1, None)
def _xor(ctx, *args):
    return _logical(ctx, args, "XOR")


@register("NOT", "v", 1)
def _not(ctx, x):
    lv = as_logical(ctx.bk, scalar(ctx.bk, 0.0) if x is None else x)
    return _bool_v(ctx.bk, 1.0 - lv.num, lv.kind)


@register("TRUE", "", 0)
def _true(ctx):
    return scalar(ctx.bk, True)


@register("FALSE", "", 0)
def _false(ctx):
    return scalar(ctx.bk, False)


# ----------------------------------------------------------------------------------------------------------------
# Information


def _is(ctx, x, test) -> V:
    if isinstance(x, RefVal):
        x = ctx.store.gather(x, memo=ctx.memo, key=x.key)
    if x is None:
        x = scalar(ctx.bk, None)
    host = test(x.kinds())
    return V(ctx.bk.asnum(host.astype(float)), np.full((1, 1, 1), bool_kind(ctx.bk), dtype=KIND), None, x.array)


@register("ISBLANK", "v", 1)
def _isblank(ctx, x):
    return _is(ctx, x, lambda k: k == BLANK)


@register("ISNUMBER", "v", 1)
def _isnumber(ctx, x):
    out = _is(ctx, x, lambda k: k == NUM)
    if not ctx.bk.tracks_errors and x is not None:  # NaN from arithmetic is an error, not a number
        out.num = ctx.bk.where(ctx.bk.isnan(x.num), 0.0, out.num)
    return out


@register("ISTEXT", "v", 1)
def _istext(ctx, x):
    return _is(ctx, x, lambda k: k == TEXT)


@register("ISNONTEXT", "v", 1)
def _isnontext(ctx, x):
    return _is(ctx, x, lambda k: k != TEXT)


@register("ISLOGICAL", "v", 1)
def _islogical(ctx, x):
    return _is(ctx, x, lambda k: k == BOOL)


@register("ISERROR", "v", 1)
def _iserror(ctx, x):
    out = _is(ctx, x, lambda k: k >= ERR0)
    if not ctx.bk.tracks_errors and x is not None:
        out.num = ctx.bk.where(ctx.bk.isnan(x.num), 1.0, out.num)
    return out


@register("ISERR", "v", 1)
def _iserr(ctx, x):
    return _is(ctx, x, lambda k: (k >= ERR0) & (k != E_NA))


@register("ISNA", "v", 1)
def _isna(ctx, x):
    return _is(ctx, x, lambda k: k == E_NA)


@register("NA", "", 0)
def _na(ctx):
    return errors(ctx.bk, E_NA, (1, 1, 1))


# ----------------------------------------------------------------------------------------------------------------
# Maths


def _math(ctx, x: V, fn, domain=None, domain_code=E_NUM) -> V:
    """An element-wise maths function: ``domain(num)`` (numpy) marks arguments Excel refuses with ``domain_code``;
    an overflow is #NUM!."""
    bk = ctx.bk
    x = as_numbers(bk, scalar(bk, 0.0) if x is None else x)
    out = fn(x.num)
    if not bk.tracks_errors:
        return V(out, x.kind, None, x.array)
    kind = None if x.kind is None else x.kind.copy()
    bad = ~np.isfinite(out) & np.isfinite(x.num)
    if domain is not None:
        dom = domain(x.num)
        bad = bad & ~dom
        kind = _mark(kind, dom, domain_code)
    kind = _mark(kind, bad, E_NUM)
    return V(out, kind, None, x.array)


def _mark(kind, mask, code):
    if mask is None or not np.any(mask):
        return kind
    base = np.full(np.shape(mask), NUM, dtype=KIND) if kind is None else np.broadcast_to(kind, np.shape(mask))
    return np.where((base < ERR0) & mask, code, base).astype(KIND)


@register("ABS", "v", 1)
def _abs(ctx, x):
    return _math(ctx, x, ctx.bk.abs)


@register("SQRT", "v", 1)
def _sqrt(ctx, x):
    return _math(ctx, x, ctx.bk.safe_sqrt, lambda v: v < 0)


@register("EXP", "v", 1)
def _exp(ctx, x):
    return _math(ctx, x, ctx.bk.exp)


@register("LN", "v", 1)
def _ln(ctx, x):
    return _math(ctx, x, lambda v: ctx.bk.safe_log(v), lambda v: v <= 0)


@register("LOG10", "v", 1)
def _log10(ctx, x):
    return _math(ctx, x, lambda v: ctx.bk.safe_log(v, ctx.bk.log10), lambda v: v <= 0)


@register("LOG", "vv", 1)
def _log(ctx, x, base=ABSENT):
    bk = ctx.bk
    if base is ABSENT or base is None:
        return _log10(ctx, x)
    x, b = broadcast(bk, as_numbers(bk, x), as_numbers(bk, base))
    lx = _math(ctx, x, lambda v: bk.safe_log(v), lambda v: v <= 0)
    lb = _math(ctx, b, lambda v: bk.safe_log(v), lambda v: v <= 0)
    out = bk.safe_div(lx.num, lb.num)
    kind = _merge_kinds(lx.kind, lb.kind)
    if bk.tracks_errors:
        kind = _mark(kind, np.asarray(b.num) == 1, E_DIV0)
    return V(out, kind, None, x.array)


def _merge_kinds(*kinds):
    return first_error(*kinds)


@register("POWER", "vv", 2)
def _power(ctx, x, y):
    bk = ctx.bk
    x, y = broadcast(bk, as_numbers(bk, x), as_numbers(bk, y))
    return power(bk, x, y, _merge_kinds(x.kind, y.kind), x.array or y.array)


@register("SIGN", "v", 1)
def _sign(ctx, x):
    return _math(ctx, x, ctx.bk.sign)


@register("PI", "", 0)
def _pi(ctx):
    return scalar(ctx.bk, math.pi)


def _digits(bk, d):
    if d is None or d is ABSENT:
        return V(bk.asnum(np.zeros((1, 1, 1))))
    d = as_numbers(bk, d)
    return V(bk.tofloat(bk.where(d.num < 0, bk.ceil(d.num), bk.floor(d.num))), d.kind, None, d.array)


def _round_excel(bk, x, digits, mode: str):
    """Excel's rounding, on the decimal value shown to 15 significant digits (ROUND(2.675, 2) is 2.68)."""
    if not bk.tracks_errors:
        if mode == "near":
            return bk.round_half_away(x, digits)
        scale = bk.power(10.0, digits)
        y = bk.abs(x) * scale
        r = bk.ceil(y) if mode == "up" else bk.floor(y)
        return (bk.sign(x) * r / scale).detach()
    x, digits = np.broadcast_arrays(np.asarray(x, dtype=float), np.asarray(digits, dtype=float))
    out = np.empty(x.shape)
    for idx in np.ndindex(*x.shape):
        v, d = float(x[idx]), int(digits[idx])
        if not math.isfinite(v):
            out[idx] = v
            continue
        scaled = float(f"{abs(v) * 10.0**d:.15g}")
        r = math.floor(scaled + 0.5) if mode == "near" else (math.ceil(scaled) if mode == "up" else math.floor(scaled))
        out[idx] = math.copysign(r / 10.0**d, v) if r else 0.0
    return out


def _rounding(ctx, x, d, mode):
    bk = ctx.bk
    x = as_numbers(bk, x)
    dd = _digits(bk, d)
    x, dd = broadcast(bk, x, dd)
    return V(_round_excel(bk, x.num, dd.num, mode), _merge_kinds(x.kind, dd.kind), None, x.array)


@register("ROUND", "vv", 2)
def _round(ctx, x, d):
    return _rounding(ctx, x, d, "near")


@register("ROUNDUP", "vv", 2)
def _roundup(ctx, x, d):
    return _rounding(ctx, x, d, "up")


@register("ROUNDDOWN", "vv", 2)
def _rounddown(ctx, x, d):
    return _rounding(ctx, x, d, "down")


@register("TRUNC", "vv", 1)
def _trunc(ctx, x, d=None):
    return _rounding(ctx, x, d, "down")


@register("INT", "v", 1)
def _int(ctx, x):
    return _math(ctx, x, ctx.bk.floor)


@register("MOD", "vv", 2)
def _mod(ctx, a, b):
    bk = ctx.bk
    a, b = broadcast(bk, as_numbers(bk, a), as_numbers(bk, b))
    q = bk.floor(bk.safe_div(a.num, b.num))
    out = a.num - b.num * q
    kind = _merge_kinds(a.kind, b.kind)
    if bk.tracks_errors:
        kind = _mark(kind, np.asarray(b.num) == 0, E_DIV0)
    return V(out, kind, None, a.array or b.array)


def _trig(name):
    def impl(ctx, x):
        return _math(ctx, x, ctx.bk.fn(name))

    return impl


for _name, _np in (
    ("SIN", "sin"),
    ("COS", "cos"),
    ("TAN", "tan"),
    ("ATAN", "arctan"),
    ("TANH", "tanh"),
    ("SINH", "sinh"),
    ("COSH", "cosh"),
):
    register(_name, "v", 1)(_trig(_np if _name != "ATAN" else "arctan"))


# ----------------------------------------------------------------------------------------------------------------
# Aggregates


def numeric_items(ctx, args, *, count_mode: str = "numbers"):
    """Per argument (num, used mask, error kinds or None): ranges and arrays contribute their numbers; direct
    values are converted (count_mode "numbers": errors and bad text are errors; "count": they are not counted)."""
    bk = ctx.bk
    for a in args:
        if a is None:
            continue
        if isinstance(a, RefVal):
            a = gather_arg(ctx, a)
        if a.array:
            if a.kind is None:
                yield a.num, None, None
                continue
            k = a.kinds()
            yield a.num, k == NUM, (np.where(k >= ERR0, k, 0) if count_mode == "numbers" else None)
        else:
            k = a.kinds()
            if count_mode == "count":
                ok = (k == NUM) | (k == BOOL)
                if (k == TEXT).any():
                    t = a.texts()
                    ok = ok | np.vectorize(lambda s: parse_number(str(s)) is not None, otypes=[bool])(t) & (k == TEXT)
                yield a.num, ok, None
                continue
            if lo(bk) and (k == TEXT).any():  # LibreOffice: text typed into SUM(...) is #VALUE!
                k = np.where(k == TEXT, E_VALUE_KIND, k).astype(KIND)
                a = V(a.num, k, None, a.array)
            nv = as_numbers(bk, a)
            nk = nv.kinds()
            used = (nk == NUM) & (k != BLANK)
            yield nv.num, used, np.where(nk >= ERR0, nk, 0)


def _batch(ctx, items) -> int:
    sizes = {np.shape(num)[0] if hasattr(num, "shape") else 1 for num, _, _ in items}
    return max(sizes) if sizes else 1


def aggregate(ctx, args, op: str) -> V:
    """SUM, SUMSQ, COUNT, COUNTA-like reductions, MIN, MAX, AVERAGE over the argument list, one result per cell."""
    bk = ctx.bk
    items = list(numeric_items(ctx, args, count_mode="count" if op == "COUNT" else "numbers"))
    n = _batch(ctx, items)
    total = bk.asnum(np.zeros((n, 1, 1)))
    count = np.zeros((n, 1, 1))
    errs = []
    for i, (num, used, err) in enumerate(items):
        if err is not None and np.any(err):
            errs.append(err)
        shape = np.shape(num)
        cnt = (
            np.full((shape[0], 1, 1), shape[1] * shape[2], dtype=float)
            if used is None
            else np.broadcast_to(used, shape).sum((1, 2), keepdims=True).astype(float)
        )
        count = count + cnt
        if op == "COUNT":
            continue
        if op in ("MIN", "MAX"):
            fill = math.inf if op == "MIN" else -math.inf
            vals = num if used is None else bk.where(used, num, fill)
            red = bk.amin(vals, (1, 2)) if op == "MIN" else bk.amax(vals, (1, 2))
            total = red if i == 0 else (bk.minimum(total, red) if op == "MIN" else bk.maximum(total, red))
            continue
        vals = num if used is None else bk.where(used, num, 0.0)
        if op == "SUMSQ":
            vals = vals * vals
        total = total + bk.sum(vals, (1, 2))
    if op == "COUNT":
        return V(bk.asnum(count))
    kind = None
    if op in ("MIN", "MAX"):
        total = bk.where(count == 0, 0.0, total) if items else bk.asnum(np.zeros((n, 1, 1)))
    if op == "AVERAGE":
        total = bk.safe_div(total, bk.asnum(count))
        kind = _mark(None, count == 0, E_DIV0)
    if errs:
        first = _first_error_per_cell(errs, n).reshape(-1, 1, 1)
        if (first > 0).any():
            base = np.full((n, 1, 1), NUM, dtype=KIND) if kind is None else np.broadcast_to(kind, (n, 1, 1))
            kind = np.where(first > 0, first, base).astype(KIND)
    return V(total, kind, None, False)


@register("SUM", "r", 1, None)
def _sum(ctx, *args):
    return aggregate(ctx, args, "SUM")


@register("SUMSQ", "r", 1, None)
def _sumsq(ctx, *args):
    return aggregate(ctx, args, "SUMSQ")


@register("COUNT", "r", 1, None)
def _count(ctx, *args):
    return aggregate(ctx, args, "COUNT")


@register("AVERAGE", "r", 1, None)
def _average(ctx, *args):
    return aggregate(ctx, args, "AVERAGE")


@register("MIN", "r", 1, None)
def _min(ctx, *args):
    return aggregate(ctx, args, "MIN")


@register("MAX", "r", 1, None)
def _max(ctx, *args):
    return aggregate(ctx, args, "MAX")


@register("COUNTA", "r", 1, None)
def _counta(ctx, *args):
    n = 1
    total = None
    for a in args:
        if a is None:
            c = np.ones((1, 1, 1))
        elif isinstance(a, RefVal) or a.array:
            v = gather_arg(ctx, a) if isinstance(a, RefVal) else a
            c = (v.kinds() != BLANK).sum((1, 2), keepdims=True).astype(float)
        else:
            c = np.ones((a.shape[0], 1, 1))
        n = max(n, c.shape[0])
        total = c if total is None else total + c
    return V(ctx.bk.asnum(total))


# ----------------------------------------------------------------------------------------------------------------
# Volatile functions: a new value at every calculation (check reports them apart; solve keeps the first draw)


@register("RAND", "", 0, volatile=True)
def _rand(ctx):
    rng = ctx.rng or np.random.default_rng()
    return V(ctx.bk.asnum(rng.random((ctx.n, 1, 1))))


@register("RANDBETWEEN", "vv", 2, volatile=True)
def _randbetween(ctx, lo, hi):
    bk = ctx.bk
    lo, hi = broadcast(bk, as_numbers(bk, lo), as_numbers(bk, hi))
    lo_h = np.ceil(np.asarray(bk.to_numpy(lo.num), dtype=float))
    hi_h = np.floor(np.asarray(bk.to_numpy(hi.num), dtype=float))
    rng = ctx.rng or np.random.default_rng()
    n = max(ctx.n, lo_h.shape[0])
    span = np.broadcast_to(hi_h - lo_h + 1, (n, 1, 1))
    draw = np.floor(rng.random((n, 1, 1)) * np.maximum(span, 1)) + np.broadcast_to(lo_h, (n, 1, 1))
    kind = _mark(_merge_kinds(lo.kind, hi.kind), span < 1, E_NUM)
    return V(bk.asnum(draw), kind)


def _serial(now: _dt.datetime) -> float:
    return (now - _EPOCH).total_seconds() / 86400.0


@register("NOW", "", 0, volatile=True)
def _now(ctx):
    return scalar(ctx.bk, _serial(ctx.now or _dt.datetime.now()))


@register("TODAY", "", 0, volatile=True)
def _today(ctx):
    return scalar(ctx.bk, math.floor(_serial(ctx.now or _dt.datetime.now())))


__all__ = ["ABSENT", "aggregate", "err_host", "err_mask", "gather_arg", "numeric_items"]
