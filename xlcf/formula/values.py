"""Spreadsheet values as arrays: numbers through the backend, kinds and text as numpy.

A value of a formula evaluated for a block of n cells is a :class:`V` whose arrays have the shape (N, h, w): N is
n, or 1 when every cell of the block sees the same value; (h, w) is 1x1 for a scalar or the shape of an array.
``kind`` says what each element is (blank, number, boolean, text or an error code); ``None`` means "all numbers",
the common case, which keeps the differentiable pass free of bookkeeping.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from xlcf.formula._pkg import ErrorValue
from xlcf.ooxml.values import ERROR_CODES as OOXML_ERROR_CODES

BLANK, NUM, BOOL, TEXT = 0, 1, 2, 3
ERR0 = 8
ERROR_CODES = OOXML_ERROR_CODES  # Excel's error values, in the order their kind codes count from ERR0
E_NULL, E_DIV0, E_VALUE, E_REF, E_NAME, E_NUM, E_NA = (ERR0 + i for i in range(7))
KIND = np.int8


def lo(bk) -> bool:
    """True for the LibreOffice flavour of the numpy backend, used to report where LibreOffice's value differs
    from Excel's (LibreOffice stores TRUE/FALSE as the numbers 1/0, among others)."""
    return getattr(bk, "flavor", "excel") == "libreoffice"


def bool_kind(bk) -> int:
    return NUM if lo(bk) else BOOL


def err_kind(code: str) -> int:
    try:
        return ERR0 + ERROR_CODES.index(code.upper())
    except ValueError:
        return E_VALUE


def err_code(kind: int) -> str:
    return ERROR_CODES[int(kind) - ERR0]


@dataclass
class V:
    """An array of spreadsheet values (see the module docstring). ``array`` marks values that came from a range
    or an array (aggregates then skip their text and booleans, as Excel's do)."""

    num: Any  # a numpy ndarray or a torch Tensor, per backend: no static type covers both
    kind: np.ndarray | None = None
    text: np.ndarray | None = None
    array: bool = False
    const: np.ndarray | None = None  # the numbers on the host when they are known not to depend on the variables

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.num.shape)

    def kinds(self) -> np.ndarray:
        """The kind of every element (NUM where ``kind`` is None), broadcast to the value's shape."""
        if self.kind is None:
            return np.full(self.shape, NUM, dtype=KIND)
        return np.broadcast_to(self.kind, self.shape)

    def texts(self) -> np.ndarray:
        if self.text is None:
            return np.full(self.shape, "", dtype=object)
        return np.broadcast_to(self.text, self.shape)


# ----------------------------------------------------------------------------------------------------------------
# Building values


def scalar(bk, value) -> V:
    """A (1, 1, 1) value from a Python value: float/int, bool, str, None (blank) or an error."""
    return from_rows(bk, [[value]], array=False)


def from_rows(bk, rows, *, array: bool = True) -> V:
    h, w = len(rows), len(rows[0])
    num = np.zeros((1, h, w))
    kind = np.full((1, h, w), NUM, dtype=KIND)
    text = None
    for i, row in enumerate(rows):
        for j, v in enumerate(row):
            k, x, t = classify(v)
            if k == BOOL and lo(bk):
                k = NUM
            kind[0, i, j] = k
            num[0, i, j] = x
            if t is not None:
                if text is None:
                    text = np.full((1, h, w), "", dtype=object)
                text[0, i, j] = t
    return V(bk.asnum(num), None if (kind == NUM).all() else kind, text, array, num)


def classify(v) -> tuple[int, float, str | None]:
    """(kind, number, text) of a Python value."""
    if v is None:
        return BLANK, 0.0, None
    if isinstance(v, bool):
        return BOOL, float(v), None
    if isinstance(v, (int, float, np.floating, np.integer)):
        x = float(v)
        if math.isnan(x):
            return E_NUM, math.nan, None
        return NUM, x, None
    if isinstance(v, str):
        return TEXT, 0.0, v
    if isinstance(v, ErrorValue):
        return err_kind(v.code), math.nan, None
    code = getattr(v, "code", None)  # nodes.Err inside array constants
    if isinstance(code, str):
        return err_kind(code), math.nan, None
    raise TypeError(f"not a cell value: {v!r}")


def errors(bk, kind: int, shape) -> V:
    return V(bk.full(shape, math.nan), np.full(shape, kind, dtype=KIND))


def to_python(kind: int, num: float, text) -> object:
    """One element as the Python value a cell holds (numbers as float)."""
    if kind == NUM:
        return float(num)
    if kind == BLANK:
        return None
    if kind == BOOL:
        return bool(num)
    if kind == TEXT:
        return text
    return ErrorValue(err_code(kind))


# ----------------------------------------------------------------------------------------------------------------
# Shapes


def broadcast(bk, *vals: V) -> list[V]:
    """Bring values to one shape as Excel does for array operations: a dimension of 1 repeats; where two arrays of
    different sizes meet, the missing elements are #N/A."""
    shapes = [v.shape for v in vals]
    target = [max(s[i] for s in shapes) for i in range(3)]
    out = []
    for v in vals:
        s = v.shape
        if tuple(s) == tuple(target):
            out.append(v)
            continue
        pad = [0 if s[i] in (1, target[i]) else target[i] - s[i] for i in range(3)]
        if any(pad):
            v = _pad_na(bk, v, pad)
        out.append(expand(bk, v, tuple(target)))
    return out


def _pad_na(bk, v: V, pad) -> V:
    n, h, w = v.shape
    kinds = v.kinds()
    num = v.num
    if pad[1]:
        num = bk.concat([num, bk.full((n, pad[1], w), math.nan)], 1)
        kinds = np.concatenate([kinds, np.full((n, pad[1], w), E_NA, dtype=KIND)], 1)
        h += pad[1]
    if pad[2]:
        num = bk.concat([num, bk.full((n, h, pad[2]), math.nan)], 2)
        kinds = np.concatenate([kinds, np.full((n, h, pad[2]), E_NA, dtype=KIND)], 2)
    text = None
    if v.text is not None:
        text = np.full(kinds.shape, "", dtype=object)
        t = v.texts()
        text[:, : t.shape[1], : t.shape[2]] = t
    return V(num, kinds, text, v.array)


def expand(bk, v: V, shape) -> V:
    if v.shape == tuple(shape):
        return v
    num = bk.broadcast_to(v.num, shape)
    kind = None if v.kind is None else np.broadcast_to(v.kind, shape)
    text = None if v.text is None else np.broadcast_to(v.text, shape)
    return V(num, kind, text, v.array, None if v.const is None else np.broadcast_to(v.const, shape))


def first(bk, v: V) -> V:
    """The top-left element of each cell's value (a formula that is not an array formula shows only that)."""
    if v.shape[1:] == (1, 1):
        return v
    return V(
        v.num[:, :1, :1],
        None if v.kind is None else np.broadcast_to(v.kind, v.shape)[:, :1, :1],
        None if v.text is None else np.broadcast_to(v.text, v.shape)[:, :1, :1],
        False,
    )


# ----------------------------------------------------------------------------------------------------------------
# Coercions


def is_error(kind: np.ndarray) -> np.ndarray:
    return kind >= ERR0


def first_error(*kinds) -> np.ndarray | None:
    """Per element, the first error among the operands' kinds (Excel reports the left operand's error first);
    NUM where none is an error. None when no operand can hold an error."""
    out = None
    for k in reversed([k for k in kinds if k is not None]):
        e = np.where(k >= ERR0, k, NUM).astype(KIND)
        out = e if out is None else np.where(e >= ERR0, e, out).astype(KIND)
    if out is not None and not (out >= ERR0).any():
        return None
    return out


def parse_number(text: str) -> float | None:
    """Excel's conversion of text to a number in arithmetic: ``"2"``, ``" 1.5e3 "``, ``"50%"``, ``"1,000"``,
    ``"$12"``; None when Excel would answer #VALUE!."""
    t = text.strip()
    if not t:
        return None
    percent = t.endswith("%")
    if percent:
        t = t[:-1].strip()
    neg = False
    if t.startswith("(") and t.endswith(")"):
        neg, t = True, t[1:-1].strip()
    if t[:1] in "+-" and t[1:2] == "$":
        t = t[0] + t[2:]
    elif t.startswith("$"):
        t = t[1:]
    if "," in t:
        whole, _, frac = t.partition(".")
        groups = whole.lstrip("+-").split(",")
        if not (groups[0] and all(len(g) == 3 and g.isdigit() for g in groups[1:])):
            return None
        t = whole.replace(",", "") + ("." + frac if frac or t.endswith(".") else "")
    if not t or t.lower() in ("inf", "-inf", "+inf", "nan", "infinity", "-infinity", "+infinity"):
        return None
    if any(ch not in "0123456789.eE+-" for ch in t):
        return None
    try:
        x = float(t)
    except ValueError:
        return None
    x = -x if neg else x
    return x / 100.0 if percent else x


def number_text(x: float, exp_digits: int = 2) -> str:
    """A number as text (``&``, the General format): rounded to 15 significant digits, positional (``0.00001``,
    ``0.333333333333333``), scientific from 1E+16 up (``1.23456789012346E+17``; LibreOffice writes three exponent
    digits, ``exp_digits=3``)."""
    if x == 0 or not math.isfinite(x):
        return "0" if x == 0 else str(x)
    x15 = float(f"{x:.15g}")
    if x15 == int(x15) and abs(x15) < 1e16:
        return str(int(x15))
    if abs(x15) >= 1e15:
        mant, _, exp = f"{x15:.14e}".partition("e")
        mant = mant.rstrip("0").rstrip(".")
        digits = exp[1:].lstrip("0") or "0"
        return f"{mant}E{exp[0]}{digits.zfill(exp_digits)}"
    decimals = max(0, 14 - math.floor(math.log10(abs(x15))))
    return f"{x15:.{decimals}f}".rstrip("0").rstrip(".")


def as_numbers(bk, v: V) -> V:
    """Numbers for arithmetic: blank -> 0, booleans -> 1/0, text parsed (else #VALUE!), errors kept. The result's
    kind is None or holds only NUM and error codes."""
    if v.kind is None:
        return v
    k = np.broadcast_to(v.kind, v.shape)
    num = v.num
    out_kind = np.where(k >= ERR0, k, NUM).astype(KIND)
    if (k == TEXT).any():
        t = v.texts()
        parsed = np.zeros(v.shape)
        for idx in zip(*np.nonzero(k == TEXT)):
            x = parse_number(t[idx])
            if x is None:
                out_kind[idx] = E_VALUE
            else:
                parsed[idx] = x
        num = bk.where(k == TEXT, bk.asnum(parsed), num)
    # blanks already hold 0 and booleans 1/0 in ``num``; errors keep NaN
    return V(num, None if not (out_kind >= ERR0).any() else out_kind, None, v.array, v.const if num is v.num else None)


def as_logical(bk, v: V) -> V:
    """TRUE/FALSE for IF, AND, NOT: numbers (non-zero is TRUE), booleans, blank (FALSE), text "TRUE"/"FALSE";
    other text is #VALUE!. Returns numbers 1/0 with error kinds."""
    if v.kind is None:
        return V(bk.tofloat(v.num != 0), None, None, v.array)
    k = np.broadcast_to(v.kind, v.shape)
    truth = bk.tofloat(v.num != 0)
    out_kind = np.where(k >= ERR0, k, NUM).astype(KIND)
    if (k == TEXT).any():
        t = v.texts()
        tv = np.zeros(v.shape)
        for idx in zip(*np.nonzero(k == TEXT)):
            s = str(t[idx]).strip().upper()
            if s in ("TRUE", "FALSE"):
                tv[idx] = 1.0 if s == "TRUE" else 0.0
            else:
                out_kind[idx] = E_VALUE
        truth = bk.where(k == TEXT, bk.asnum(tv), truth)
    return V(truth, None if not (out_kind >= ERR0).any() else out_kind, None, v.array)


def as_text(v: V, exp_digits: int = 2) -> np.ndarray:
    """Each element as text (``&``): numbers in Excel's General format, TRUE/FALSE, blank as ""."""
    k = v.kinds()
    num = np.asarray(_host(v.num))
    num = np.broadcast_to(num, v.shape)
    t = v.texts()
    out = np.empty(v.shape, dtype=object)
    for idx in np.ndindex(*v.shape):
        kk = k[idx]
        if kk == TEXT:
            out[idx] = t[idx]
        elif kk == NUM:
            out[idx] = number_text(float(num[idx]), exp_digits)
        elif kk == BOOL:
            out[idx] = "TRUE" if num[idx] else "FALSE"
        else:
            out[idx] = ""
    return out


def _host(x):
    """A backend array on the host as numpy (torch tensors are detached; rarely needed: text of numbers)."""
    if isinstance(x, np.ndarray):
        return x
    detach = getattr(x, "detach", None)
    return detach().cpu().numpy() if detach else np.asarray(x)


def values_out(bk, v: V) -> list:
    """The Python value of every element of a (N, 1, 1) value, in order (blank becomes 0, as a cell shows it)."""
    num = np.broadcast_to(np.asarray(_host(v.num), dtype=float), v.shape).reshape(-1)
    if v.kind is None:
        return [float(x) for x in num]
    k = np.broadcast_to(v.kind, v.shape).reshape(-1)
    t = v.texts().reshape(-1)
    out = []
    for kk, x, tt in zip(k, num, t):
        out.append(0.0 if kk == BLANK else to_python(int(kk), x, tt))
    return out


__all__ = [
    "BLANK",
    "BOOL",
    "ERR0",
    "ERROR_CODES",
    "E_DIV0",
    "E_NA",
    "E_NAME",
    "E_NULL",
    "E_NUM",
    "E_REF",
    "E_VALUE",
    "KIND",
    "NUM",
    "TEXT",
    "V",
    "as_logical",
    "as_numbers",
    "as_text",
    "broadcast",
    "classify",
    "err_code",
    "err_kind",
    "errors",
    "expand",
    "first",
    "first_error",
    "from_rows",
    "is_error",
    "number_text",
    "parse_number",
    "scalar",
    "to_python",
    "values_out",
]
