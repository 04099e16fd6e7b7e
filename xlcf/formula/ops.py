"""Excel's operators on array values: arithmetic, ``&``, comparisons — with Excel's coercions and errors.

- Arithmetic converts blank to 0, TRUE/FALSE to 1/0 and numeric text (``"2"``) to its number; other text is
  #VALUE!; an error operand gives its error (the left one first). ``x/0`` is #DIV/0!, ``0^0`` and roots of
  negative numbers are #NUM!, ``0^-1`` is #DIV/0!.
- Comparisons never convert: numbers < text < booleans, text compares case-insensitively, a blank equals 0, ""
  and FALSE.
"""

from __future__ import annotations

import numpy as np

from xlcf.formula.values import (
    BLANK,
    BOOL,
    E_DIV0,
    E_NUM,
    ERR0,
    KIND,
    NUM,
    TEXT,
    V,
    as_numbers,
    as_text,
    bool_kind,
    broadcast,
    first_error,
    lo,
)

_ARITH = ("+", "-", "*", "/", "^")
_COMPARE = ("=", "<>", "<", "<=", ">", ">=")


def _with_errors(bk, num, kind, new_errors: list[tuple[np.ndarray | None, int]]) -> V:
    """Attach the errors found by masks (numpy backend only) to a result."""
    for mask, code in new_errors:
        if mask is None or not np.any(mask):
            continue
        base = (
            np.full(np.shape(mask), NUM, dtype=KIND)
            if kind is None
            else np.array(np.broadcast_to(kind, np.shape(mask)))
        )
        kind = np.where((base < ERR0) & mask, code, base).astype(KIND)
    return V(num, kind, None, False)


def arithmetic(bk, op: str, a: V, b: V) -> V:
    a, b = broadcast(bk, a, b)
    a, b = as_numbers(bk, a), as_numbers(bk, b)
    x, y = a.num, b.num
    kind = first_error(a.kind, b.kind)
    array = a.array or b.array
    if op == "+":
        out = x + y
    elif op == "-":
        out = x - y
    elif op == "*":
        out = x * y
    elif op == "/":
        if bk.tracks_errors:
            with np.errstate(all="ignore"):
                out = x / y
            v = _with_errors(bk, out, kind, [(y == 0, E_DIV0), (~np.isfinite(out) & np.isfinite(x) & (y != 0), E_NUM)])
            v.array = array
            return v
        out = x / y if b.const is not None and np.all(b.const != 0) else bk.safe_div(x, y)
    elif op == "^":
        return power(bk, a, b, kind, array)
    else:  # pragma: no cover - the parser only produces the operators above
        raise ValueError(op)
    if bk.tracks_errors:
        v = _with_errors(bk, out, kind, [(~np.isfinite(out) & np.isfinite(x) & np.isfinite(y), E_NUM)])
        v.array = array
        return v
    return V(out, kind, None, array)


def power(bk, a: V, b: V, kind=None, array=False) -> V:
    """``a ^ b`` (and POWER): 0^0 and negative^fraction are #NUM!, 0^negative is #DIV/0!."""
    x, y = a.num, b.num
    if not bk.tracks_errors and b.const is not None:
        c = np.asarray(b.const)
        e = float(c.flat[0])
        if e == int(e) and e >= 1 and (c == e).all():  # x^2 and friends: defined everywhere, no guard needed
            return V(x * x if e == 2 else bk.power(x, e), kind, None, array)
    if bk.tracks_errors:
        with np.errstate(all="ignore"):
            out = np.power(x, y)
        zero_neg = (x == 0) & (y < 0)
        zero_zero = None if lo(bk) else (x == 0) & (y == 0)  # 0^0: #NUM! in Excel, 1 in LibreOffice
        v = _with_errors(
            bk, out, kind, [(zero_neg, E_DIV0), (zero_zero, E_NUM), (~np.isfinite(out) & ~zero_neg, E_NUM)]
        )
        v.array = array
        return v
    return V(bk.safe_power(x, y), kind, None, array)


def negate(bk, a: V) -> V:
    a = as_numbers(bk, a)
    return V(-a.num, a.kind, None, a.array)


def percent(bk, a: V) -> V:
    a = as_numbers(bk, a)
    return V(a.num / 100.0, a.kind, None, a.array)


def concat(bk, a: V, b: V) -> V:
    a, b = broadcast(bk, a, b)
    kind = first_error(a.kind, b.kind)
    digits = 3 if lo(bk) else 2  # LibreOffice writes 1E+020 where Excel writes 1E+20
    ta, tb = as_text(a, digits), as_text(b, digits)
    text = np.empty(ta.shape, dtype=object)
    for idx in np.ndindex(*ta.shape):
        text[idx] = ta[idx] + tb[idx]
    out_kind = np.full(ta.shape, TEXT, dtype=KIND) if kind is None else np.where(kind >= ERR0, kind, TEXT).astype(KIND)
    return V(bk.full(ta.shape, 0.0), out_kind, text, a.array or b.array)


def _rank(kind: np.ndarray) -> np.ndarray:
    # numbers (and blanks facing numbers) 0, text 1, booleans 2
    return np.select([kind == TEXT, kind == BOOL], [1, 2], 0)


def compare(bk, op: str, a: V, b: V) -> V:
    """Comparison as TRUE/FALSE (BOOL kind, numbers 1/0). Numbers compare within Excel's 15-digit tolerance."""
    a, b = broadcast(bk, a, b)
    kind = first_error(a.kind, b.kind)
    array = a.array or b.array
    if a.kind is None and b.kind is None:
        res = _num_compare(bk, op, a.num, b.num)
        return V(bk.tofloat(res), np.full((1, 1, 1), bool_kind(bk), dtype=KIND), None, array)
    ka, kb = a.kinds(), b.kinds()
    # a blank takes the type of the other side: 0, "" or FALSE
    ka_eff = np.where(ka == BLANK, np.where(kb == BLANK, NUM, kb), ka)
    kb_eff = np.where(kb == BLANK, np.where(ka == BLANK, NUM, ka), kb)
    ra, rb = _rank(ka_eff), _rank(kb_eff)
    num_res = _num_compare(bk, op, a.num, b.num)
    host = bk.to_numpy(num_res) if (ra != rb).any() or (ra == 1).any() else None
    if host is None:
        res = num_res  # same type everywhere and no text: a plain numeric comparison (booleans as 1/0)
    else:
        rank_cmp = np.sign(ra - rb)
        text_cmp = np.zeros(ra.shape, dtype=np.int8)
        both_text = (ra == 1) & (rb == 1)
        if both_text.any():
            text_cmp[both_text] = _text_order(a, b, ka, kb, both_text)
        order = np.where(ra != rb, rank_cmp, text_cmp)
        by_order = _sign_compare(op, order)
        res = bk.where((ra != rb) | both_text, bk.asnum(by_order.astype(float)), bk.tofloat(num_res))
    bk_ = bool_kind(bk)
    out_kind = np.full((1, 1, 1), bk_, dtype=KIND) if kind is None else np.where(kind >= ERR0, kind, bk_).astype(KIND)
    return V(bk.tofloat(res), out_kind, None, array)


def _text_order(a: V, b: V, ka: np.ndarray, kb: np.ndarray, where: np.ndarray) -> np.ndarray:
    """-1, 0 or 1 per element of ``where``: text compared case-insensitively (a blank is ""), vectorised over
    numpy's unicode arrays (a whole block's ``H2=""`` at once). numpy's unicode type ignores trailing NUL
    characters, which no spreadsheet text holds (XML cannot store them, and Excel's CHAR(0) is an error)."""
    ta, tb = np.broadcast_to(a.texts(), ka.shape), np.broadcast_to(b.texts(), kb.shape)
    xl = np.array([str(v).lower() for v in np.where(ka[where] == BLANK, "", ta[where]).tolist()], dtype=str)
    yl = np.array([str(v).lower() for v in np.where(kb[where] == BLANK, "", tb[where]).tolist()], dtype=str)
    return (xl > yl).astype(np.int8) - (xl < yl).astype(np.int8)


def _sign_compare(op: str, order: np.ndarray) -> np.ndarray:
    return {"=": order == 0, "<>": order != 0, "<": order < 0, "<=": order <= 0, ">": order > 0, ">=": order >= 0}[op]


def _num_compare(bk, op: str, x, y):
    # Excel compares numbers to 15 significant digits (=0.1+0.2=0.3 is TRUE); LibreOffice's approxEqual alike.
    close = bk.abs(x - y) <= 2.0**-48 * bk.maximum(bk.abs(x), bk.abs(y))
    if op == "=":
        return close
    if op == "<>":
        return ~close
    if op == "<":
        return (x < y) & ~close
    if op == "<=":
        return (x < y) | close
    if op == ">":
        return (x > y) & ~close
    return (x > y) | close


def binary(bk, op: str, a: V, b: V) -> V:
    if op in _ARITH:
        return arithmetic(bk, op, a, b)
    if op == "&":
        return concat(bk, a, b)
    return compare(bk, op, a, b)


__all__ = ["arithmetic", "binary", "compare", "concat", "negate", "percent", "power"]
