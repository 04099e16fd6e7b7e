"""Criteria functions: COUNTIF, SUMIF, AVERAGEIF, their multi-criteria forms COUNTIFS, SUMIFS, AVERAGEIFS, and
COUNTBLANK; Excel's wildcards (shared with MATCH)."""

from __future__ import annotations

import re

import numpy as np

from xlcf.formula.functions import _mark, gather_arg
from xlcf.formula.registry import register
from xlcf.formula.store import RefVal
from xlcf.formula.values import (
    BLANK,
    BOOL,
    E_DIV0,
    E_VALUE,
    ERR0,
    NUM,
    TEXT,
    V,
    errors,
    parse_number,
    scalar,
)

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


# ----------------------------------------------------------------------------------------------------------------
# Criteria: COUNTIF, SUMIF, AVERAGEIF


def criteria_mask(kinds: np.ndarray, nums: np.ndarray, texts, crit_kind: int, crit_num: float, crit_text):
    """Which cells a COUNTIF criterion selects: a number, TRUE/FALSE, or text such as ``">=3"``, ``"<>x"``,
    ``"ap*"``, ``""`` (blank cells), ``"<>"`` (non-blank cells)."""

    def text_of():
        return (
            np.vectorize(lambda s: str(s).lower(), otypes=[object])(texts)
            if texts is not None
            else np.full(kinds.shape, "", dtype=object)
        )

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
            op, s = cand, s[len(cand) :]
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


def _criterion(ctx, rng, crit, clip: bool = True):
    """(masks (n, h, w) of the cells a criterion selects, per cell of the block; the count of selected blank
    cells past the used area (left out of a clipped read); the range's values)."""
    bk = ctx.bk
    if isinstance(rng, RefVal):
        rv = ctx.store.gather(rng, clip=clip, memo=ctx.memo, key=rng.key)
        full = rng.h * rng.w
    else:
        rv, full = rng, None
    m = rv.shape[0]
    kinds = rv.kinds()
    nums = np.asarray(bk.to_numpy(rv.num), dtype=float)
    texts = rv.texts() if rv.text is not None else None
    crit = scalar(bk, None) if crit is None else crit
    ck = crit.kinds().reshape(-1)
    cn = np.asarray(bk.to_numpy(crit.num), dtype=float).reshape(-1)
    ct = crit.texts().reshape(-1)
    n = max(m, len(ck), ctx.n if (m > 1 or len(ck) > 1) else 1)
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
    return masks, extra, rv


def _reduce(ctx, masks: np.ndarray, values: V, mode: str) -> V:
    """Sum or average of the numbers of ``values`` where ``masks`` selects."""
    bk = ctx.bk
    use = masks & (np.broadcast_to(values.kinds(), masks.shape) == NUM)
    total = bk.sum(bk.where(use, values.num, 0.0), (1, 2))
    if mode == "SUM":
        return V(total)
    cnt = use.sum((1, 2)).reshape(-1, 1, 1).astype(float)
    return V(bk.safe_div(total, bk.asnum(cnt)), _mark(None, cnt == 0, E_DIV0))


def _values_like(ctx, values, rv: V) -> V:
    """SUMIF's sum range: its top-left cell and the criteria range's shape (as Excel reads it)."""
    if isinstance(values, RefVal):
        return ctx.store.gather(RefVal(values.sheet, values.top, values.left, rv.shape[1], rv.shape[2]))
    return rv if values is None else values


def _criteria_reduce(ctx, rng, crit, values, mode: str) -> V:
    masks, extra, rv = _criterion(ctx, rng, crit)
    if mode == "COUNT":
        return V(ctx.bk.asnum((masks.sum((1, 2)) + extra).reshape(-1, 1, 1)))
    return _reduce(ctx, masks, _values_like(ctx, values, rv), mode)


def _ifs(ctx, values, pairs, mode: str) -> V:
    """COUNTIFS/SUMIFS/AVERAGEIFS: every criterion must hold; all ranges have one shape (else #VALUE!)."""
    bk = ctx.bk
    shapes = {(r.h, r.w) if isinstance(r, RefVal) else r.shape[1:] for r, _ in pairs}
    if values is not None:
        shapes.add((values.h, values.w) if isinstance(values, RefVal) else values.shape[1:])
    if len(shapes) != 1 or len(pairs) == 0:
        return errors(bk, E_VALUE, (ctx.n, 1, 1))
    masks = None
    for rng, crit in pairs:
        m, _, _ = _criterion(ctx, rng, crit, clip=False)
        masks = m if masks is None else (masks & m if masks.shape == m.shape else np.logical_and(masks, m))
    assert masks is not None  # pairs is not empty
    if mode == "COUNT":
        return V(bk.asnum(masks.sum((1, 2)).reshape(-1, 1, 1).astype(float)))
    if isinstance(values, RefVal):
        values = ctx.store.gather(values, memo=ctx.memo, key=values.key)
    return _reduce(ctx, masks, values, mode)


def _pairs_of(args) -> list:
    return [(args[i], args[i + 1]) for i in range(0, len(args) - 1, 2)]


@register("COUNTIFS", "", 2, None, cycle="Rv")
def _countifs(ctx, *args):
    if len(args) % 2:
        return errors(ctx.bk, E_VALUE, (ctx.n, 1, 1))
    return _ifs(ctx, None, _pairs_of(args), "COUNT")


@register("SUMIFS", "R", 3, None, cycle="Rv")
def _sumifs(ctx, values, *args):
    if len(args) % 2:
        return errors(ctx.bk, E_VALUE, (ctx.n, 1, 1))
    return _ifs(ctx, values, _pairs_of(args), "SUM")


@register("AVERAGEIFS", "R", 3, None, cycle="Rv")
def _averageifs(ctx, values, *args):
    if len(args) % 2:
        return errors(ctx.bk, E_VALUE, (ctx.n, 1, 1))
    return _ifs(ctx, values, _pairs_of(args), "AVERAGE")


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
    empty = k == BLANK
    if v.text is not None:
        empty = empty | ((k == TEXT) & (v.texts() == ""))
    extra = rng.h * rng.w - v.shape[1] * v.shape[2]
    return V(bk.asnum((empty.sum((1, 2)) + extra).reshape(-1, 1, 1).astype(float)))


__all__ = ["criteria_mask", "has_wildcards", "wildcard_regex"]
