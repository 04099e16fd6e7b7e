"""Excel formula text -> AST, with Excel's operator precedence.

Lexing is openpyxl's :class:`openpyxl.formula.tokenizer.Tokenizer`; this module turns its token list into the
trees of :mod:`xlcf.formula.nodes` with a precedence-climbing parser. Excel's precedence, tightest first::

    reference operators (: space ,)  >  negation (unary -)  >  %  >  ^  >  * /  >  + -  >  &  >  = <> < <= > >=

so ``-2^2`` is 4 (negation first) and ``2^3^2`` is 64 (``^`` is left-associative in Excel, unlike mathematics).

A parsed formula is also kept as a *template*: its text cut into literal pieces and references, the references
relative to the formula's cell. Rendering a template at another cell reproduces the text Excel would show there
after copying the formula; when a cell's text equals its neighbour's template rendered at the cell, the two hold the
same formula and share one tree — no tokenizing needed (a 200x200 block of copied formulas is tokenized once).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from xlcf.errors import FormulaError
from xlcf.formula.nodes import (
    MAX_COL,
    MAX_ROW,
    Array,
    Binary,
    Bool,
    Bound,
    Call,
    Err,
    Missing,
    Name,
    Node,
    Num,
    Percent,
    Ref,
    Str,
    Unary,
)


def _openpyxl_tokenizer():
    """openpyxl's formula tokenizer module. It needs only ``re``, but importing it as ``openpyxl.formula.tokenizer``
    runs ``openpyxl/__init__`` first (a quarter of a second, more than a sheet's whole fit): where openpyxl is not
    loaded yet, the module file is loaded on its own."""
    import importlib.util
    import sys
    from pathlib import Path

    loaded = sys.modules.get("openpyxl.formula.tokenizer")
    if loaded is not None:
        return loaded
    spec = importlib.util.find_spec("openpyxl")
    if spec is None or spec.origin is None:
        raise ImportError("openpyxl is not installed")
    source = Path(spec.origin).parent / "formula" / "tokenizer.py"
    own = importlib.util.spec_from_file_location("xlcf.formula._openpyxl_tokenizer", source)
    if own is None or own.loader is None:
        from openpyxl.formula import tokenizer

        return tokenizer
    module = importlib.util.module_from_spec(own)
    sys.modules[own.name] = module
    own.loader.exec_module(module)
    return module


if TYPE_CHECKING:
    from openpyxl.formula.tokenizer import Token, Tokenizer, TokenizerError
else:
    _tokenizer = _openpyxl_tokenizer()
    Token, Tokenizer, TokenizerError = _tokenizer.Token, _tokenizer.Tokenizer, _tokenizer.TokenizerError

ERROR_LITERALS = ("#NULL!", "#DIV/0!", "#VALUE!", "#REF!", "#NAME?", "#NUM!", "#N/A", "#GETTING_DATA")

# Binding powers (higher binds tighter). Unary minus is above ^ as in Excel; % is a postfix between the two.
_INFIX = {"=": 10, "<>": 10, "<": 10, "<=": 10, ">": 10, ">=": 10, "&": 20, "+": 30, "-": 30, "*": 40, "/": 40, "^": 50}
_PERCENT_BP = 55
_PREFIX_BP = 60
_FUNC_PREFIXES = ("_xlfn._xlws.", "_xlfn.", "_xlws.")

# Lexing one bound of an A1 reference (the tokenizer hands a whole "Sheet!A1:B2" operand over as one token).
_CELL = re.compile(r"(\$?)([A-Za-z]{1,3})(\$?)([0-9]{1,7})")
_COL = re.compile(r"(\$?)([A-Za-z]{1,3})")
_ROW = re.compile(r"(\$?)([0-9]{1,7})")


def _col_index(letters: str) -> int:
    n = 0
    for ch in letters.upper():
        n = n * 26 + (ord(ch) - 64)
    return n


@functools.cache
def _col_letters(index: int) -> str:
    name = ""
    while index > 0:
        index, rem = divmod(index - 1, 26)
        name = chr(65 + rem) + name
    return name


# ----------------------------------------------------------------------------------------------------------------
# Templates


@dataclass(frozen=True)
class RefPiece:
    """A reference inside a template: ``prefix`` (``"'My sheet'!"`` or ``""``) and its bounds as written.

    ``ends`` holds one or two (kind, col Bound|None, row Bound|None) with kind "cell", "col" (``A:B``) or "row"
    (``1:2``); ``lower`` keeps lower-case column letters as the author typed them."""

    prefix: str
    ends: tuple[tuple[str, Bound | None, Bound | None], ...]
    lower: bool = False

    def render(self, row: int, col: int) -> str | None:
        """The reference as written in the cell at (row, col); None when it falls off the sheet."""
        # Hot when a sheet of copied formulas is read (once per reference per cell); the text depends only on the
        # row (``$B26:$F26``) or the column (``H$20:H$24``) for most references, so it is cached on that.
        state: tuple[bool, bool, dict[tuple[int, int], str | None]] | None = self.__dict__.get("_state")
        if state is None:
            row_rel = any(rb is not None and not rb.absolute for _k, _cb, rb in self.ends)
            col_rel = any(cb is not None and not cb.absolute for _k, cb, _rb in self.ends)
            state = (row_rel, col_rel, {})
            object.__setattr__(self, "_state", state)
        row_rel, col_rel, cache = state
        key = (row if row_rel else 0, col if col_rel else 0)
        text = cache.get(key, False)
        if isinstance(text, bool):  # the default: not cached yet (cached texts are str or None)
            text = self._render(row, col)
            if len(cache) < 100_000:
                cache[key] = text
        return text

    def _render(self, row: int, col: int) -> str | None:
        parts = []
        for _kind, cb, rb in self.ends:
            text = ""
            if cb is not None:
                c = cb.value if cb.absolute else col + cb.value
                if not 1 <= c <= MAX_COL:
                    return None
                letters = _col_letters(c)
                text = ("$" if cb.absolute else "") + (letters.lower() if self.lower else letters)
            if rb is not None:
                r = rb.value if rb.absolute else row + rb.value
                if not 1 <= r <= MAX_ROW:
                    return None
                text += ("$" if rb.absolute else "") + str(r)
            parts.append(text)
        return self.prefix + ":".join(parts)


Template = tuple  # of str | RefPiece


def render(template: Template, row: int, col: int) -> str | None:
    """The formula text (with ``=``) a template shows at (row, col); None when a reference falls off the sheet."""
    out = ["="]
    for piece in template:
        if isinstance(piece, str):
            out.append(piece)
        else:
            text = piece.render(row, col)
            if text is None:
                return None
            out.append(text)
    return "".join(out)


def _bound(abs_flag: str, value: int, anchor: int) -> Bound:
    return Bound(value, True) if abs_flag else Bound(value - anchor, False)


def _lex_ref(text: str, row: int, col: int) -> RefPiece | None:
    """The bounds of an A1 reference operand such as ``'My sheet'!$A$1:B2``, ``A:A`` or ``3:3``; None if the text
    is not a reference (a defined name, an error, a structured reference...)."""
    prefix, body = "", text
    if "!" in text:
        cut = text.rindex("!") + 1
        prefix, body = text[:cut], text[cut:]
    ends: list[tuple[str, Bound | None, Bound | None]] = []
    for part in body.split(":"):
        m = _CELL.fullmatch(part)
        if m and _col_index(m.group(2)) <= MAX_COL and 1 <= int(m.group(4)) <= MAX_ROW:
            ends.append(
                ("cell", _bound(m.group(1), _col_index(m.group(2)), col), _bound(m.group(3), int(m.group(4)), row))
            )
            continue
        m = _COL.fullmatch(part)
        if m and _col_index(m.group(2)) <= MAX_COL and ":" in body:
            ends.append(("col", _bound(m.group(1), _col_index(m.group(2)), col), None))
            continue
        m = _ROW.fullmatch(part)
        if m and 1 <= int(m.group(2)) <= MAX_ROW and ":" in body:
            ends.append(("row", None, _bound(m.group(1), int(m.group(2)), row)))
            continue
        return None
    if len(ends) > 2 or len({k for k, _, _ in ends}) != 1:
        return None
    lower = any(ch.islower() for ch in body if ch.isalpha())
    return RefPiece(prefix, tuple(ends), lower)


def _sheet_of(prefix: str, where: str, formula: str) -> str | None:
    if not prefix:
        return None
    name = prefix[:-1]
    if name.startswith("["):
        raise FormulaError(
            f"{formula}: references to other workbooks ({name}) are not supported",
            where=where,
            field="external reference",
        )
    if name.startswith("'") and name.endswith("'"):
        name = name[1:-1].replace("''", "'")
    if ":" in name:
        raise FormulaError(f"{formula}: 3-D references ({name}) are not supported", where=where, field="3-D reference")
    return name


def ref_node(piece: RefPiece, where: str = "", formula: str = "") -> Ref:
    sheet = _sheet_of(piece.prefix, where, formula)
    ends = piece.ends if len(piece.ends) == 2 else piece.ends * 2
    (kind, c1, r1), (_, c2, r2) = ends
    if kind == "col":  # A:B = rows 1..MAX_ROW
        r1, r2 = Bound(1, True), Bound(MAX_ROW, True)
    elif kind == "row":
        c1, c2 = Bound(1, True), Bound(MAX_COL, True)
    # a cell end has both bounds, and "col"/"row" ends got the missing ones just above
    assert r1 is not None and r2 is not None and c1 is not None and c2 is not None
    # Excel keeps ranges normalised (top-left first); do it here when both bounds move alike.
    if r1.absolute == r2.absolute and r1.value > r2.value:
        r1, r2 = r2, r1
    if c1.absolute == c2.absolute and c1.value > c2.value:
        c1, c2 = c2, c1
    return Ref(sheet, r1, c1, r2, c2)


# ----------------------------------------------------------------------------------------------------------------
# Parsing


@dataclass(frozen=True)
class Parsed:
    """A parsed formula: its tree, its template (for matching copies) and the function names it calls."""

    tree: Node
    template: Template


def tokenize(formula: str, where: str = "") -> list[Token]:
    text = formula if formula.startswith("=") else "=" + formula
    try:
        return Tokenizer(text).items
    except (TokenizerError, IndexError, ValueError) as err:
        raise FormulaError(f"{formula}: cannot read the formula ({err})", where=where, field="syntax") from None


def parse(formula: str, row: int = 1, col: int = 1, where: str = "") -> Parsed:
    """Parse ``formula`` (with or without its leading ``=``) as it stands in the cell at (row, col).

    FormulaError (``where`` = the cell) for a syntax error or a construct the evaluator does not know (external
    or 3-D references, structured references, the union and intersection operators)."""
    text = formula if formula.startswith("=") else "=" + formula
    items = tokenize(text, where)
    pieces: list = []
    stream: list = []  # (kind, value, node) with whitespace dropped
    for tok in items:
        if tok.type == Token.OPERAND and tok.subtype == Token.RANGE:
            value = tok.value
            at = ""
            if value.startswith("@"):
                at, value = "@", value[1:]
            piece = _lex_ref(value, row, col)
            if piece is not None:
                pieces.extend([at, piece] if at else [piece])
                node: Node = ref_node(piece, where, text)
            else:
                pieces.append(tok.value)
                node = _name_or_error(value, where, text)
            if at:
                node = Call("SINGLE", (node,))
            stream.append(("operand", tok.value, node))
            continue
        pieces.append(tok.value)
        if tok.type == Token.WSPACE:
            stream.append(("space", tok.value, None))
        elif tok.type == Token.OPERAND:
            stream.append(("operand", tok.value, _literal(tok, where, text)))
        elif tok.type == Token.FUNC and tok.subtype == Token.OPEN:
            name = tok.value[:-1]
            if ":" in name:
                raise FormulaError(
                    f"{text}: the range operator ':' between a reference and a function is not supported",
                    where=where,
                    field=":",
                )
            stream.append(("func", _function_name(name), None))
        elif tok.type in (Token.FUNC, Token.PAREN, Token.ARRAY):
            stream.append((tok.subtype.lower() + tok.type.lower(), tok.value, None))
        elif tok.type == Token.SEP:
            stream.append(("sep", tok.value, None))
        elif tok.type == Token.OP_PRE:
            stream.append(("prefix", tok.value, None))
        elif tok.type == Token.OP_POST:
            stream.append(("postfix", tok.value, None))
        elif tok.type == Token.OP_IN:
            if tok.value == ",":
                raise FormulaError(f"{text}: the union operator (A1,B1) is not supported", where=where, field=",")
            stream.append(("infix", tok.value, None))
        else:  # pragma: no cover - the tokenizer has no other token types
            raise FormulaError(f"{text}: unexpected {tok.value!r}", where=where, field="syntax")
    tree = _Parser(stream, text, where).parse()
    return Parsed(tree, tuple(_merge_text(pieces)))


def _merge_text(pieces: list) -> list:
    out: list = []
    for p in pieces:
        if isinstance(p, str) and out and isinstance(out[-1], str):
            out[-1] += p
        elif p != "":
            out.append(p)
    return out


def _function_name(name: str) -> str:
    upper = name.upper()
    for prefix in _FUNC_PREFIXES:
        if upper.startswith(prefix.upper()):
            return upper[len(prefix) :]
    return upper


def _name_or_error(value: str, where: str, formula: str) -> Node:
    prefix, body = "", value
    if "!" in value:
        cut = value.rindex("!") + 1
        prefix, body = value[:cut], value[cut:]
    if body.upper() in ERROR_LITERALS:  # Sheet1!#REF! after a deleted range
        return Err(body.upper())
    if "[" in body or "#" in body:
        raise FormulaError(
            f"{formula}: structured or spilled-range references ({value}) are not supported", where=where, field=value
        )
    return Name(body, _sheet_of(prefix, where, formula))


def _literal(tok: Token, where: str, formula: str) -> Node:
    if tok.subtype == Token.NUMBER:
        return Num(float(tok.value))
    if tok.subtype == Token.TEXT:
        return Str(tok.value[1:-1].replace('""', '"'))
    if tok.subtype == Token.LOGICAL:
        return Bool(tok.value.upper() == "TRUE")
    if tok.subtype == Token.ERROR:
        return Err(tok.value.upper())
    raise FormulaError(f"{formula}: unexpected {tok.value!r}", where=where, field="syntax")  # pragma: no cover


class _Parser:
    """Precedence climbing over the token stream."""

    def __init__(self, stream: list, text: str, where: str):
        self.toks = stream
        self.i = 0
        self.text = text
        self.where = where

    def fail(self, what: str) -> FormulaError:
        return FormulaError(f"{self.text}: {what}", where=self.where, field="syntax")

    def peek(self, skip_space: bool = True):
        while skip_space and self.i < len(self.toks) and self.toks[self.i][0] == "space":
            self.i += 1
        return self.toks[self.i] if self.i < len(self.toks) else (None, None, None)

    def take(self):
        tok = self.peek()
        self.i += 1
        return tok

    def parse(self) -> Node:
        if self.peek()[0] is None:
            raise self.fail("the formula is empty")
        node = self.expr(0)
        kind, value, _ = self.peek()
        if kind is not None:
            raise self.fail(f"unexpected {value!r}")
        return node

    def expr(self, min_bp: int) -> Node:
        lhs = self.primary()
        while True:
            # A space between two operands is Excel's intersection operator.
            j = self.i
            if j < len(self.toks) and self.toks[j][0] == "space":
                nxt = self.toks[j + 1][0] if j + 1 < len(self.toks) else None
                if nxt in ("operand", "func", "openparen"):
                    raise FormulaError(
                        f"{self.text}: the intersection operator (a space between two ranges) is not supported",
                        where=self.where,
                        field="intersection",
                    )
            kind, value, _ = self.peek()
            if kind == "postfix":
                if min_bp >= _PERCENT_BP:
                    break
                self.take()
                lhs = Percent(lhs)
                continue
            if kind != "infix":
                break
            bp = _INFIX.get(value)
            if bp is None:
                raise self.fail(f"unknown operator {value!r}")
            if bp <= min_bp:
                break
            self.take()
            lhs = Binary(value, lhs, self.expr(bp))
        return lhs

    def primary(self) -> Node:
        kind, value, node = self.take()
        if kind == "operand":
            return node
        if kind == "prefix":
            operand = self.expr(_PREFIX_BP)
            return Unary(value, operand)
        if kind == "openparen":
            inner = self.expr(0)
            if self.take()[0] != "closeparen":
                raise self.fail("a parenthesis is not closed")
            return inner
        if kind == "func":
            return Call(value, self.arguments())
        if kind == "openarray":
            return self.array()
        if kind is None:
            raise self.fail("the formula ends too early")
        raise self.fail(f"unexpected {value!r}")

    def arguments(self) -> tuple[Node, ...]:
        args: list[Node] = []
        if self.peek()[0] == "closefunc":
            self.take()
            return ()
        while True:
            kind = self.peek()[0]
            if kind in ("sep", "closefunc"):
                args.append(Missing())
            else:
                args.append(self.expr(0))
            kind, value, _ = self.take()
            if kind == "closefunc":
                return tuple(args)
            if kind != "sep" or value != ",":
                raise self.fail("a function's arguments are not closed")

    def array(self) -> Array:
        rows: list[list] = [[]]
        while True:
            kind, value, node = self.take()
            sign = 1.0
            if kind == "prefix":
                sign = -1.0 if value == "-" else 1.0
                kind, value, node = self.take()
            if kind != "operand" or isinstance(node, (Ref, Name, Call)):
                raise self.fail("an array constant holds only numbers, text, TRUE/FALSE and error values")
            if isinstance(node, Num):
                rows[-1].append(sign * node.value)
            elif sign != 1.0:
                raise self.fail("only numbers can be negated inside an array constant")
            elif isinstance(node, (Str, Bool)):
                rows[-1].append(node.value)
            else:
                rows[-1].append(node)  # Err
            kind, value, _ = self.take()
            if kind == "closearray":
                break
            if kind != "sep":
                raise self.fail("an array constant is not closed")
            if value == ";":
                rows.append([])
        if len({len(r) for r in rows}) != 1:
            raise self.fail("the rows of an array constant have different lengths")
        return Array(tuple(tuple(r) for r in rows))


__all__ = ["ERROR_LITERALS", "Parsed", "RefPiece", "Template", "parse", "ref_node", "render", "tokenize"]
