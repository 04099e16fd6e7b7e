"""The Solver model of a sheet — objective cell, variable cells, sense, constraints — read from the hidden names
Excel's Solver stores (or given as flags), and checked before anything is computed.

Excel 2010+ keeps the model of each sheet as sheet-scoped hidden defined names:

=============== =========================================================================================
``solver_opt``  the objective cell (``'bias'!$V$42``; ``'bias'!#REF!`` once its cell was deleted)
``solver_adj``  the variable cells, areas joined by commas (``'bias'!$B$26:$F$40,'bias'!$H$20:$V$24``)
``solver_typ``  1 = max, 2 = min, 3 = value of ``solver_val``
``solver_neg``  1 = "make unconstrained variables non-negative", 2 = not
``solver_num``  the number of constraints; each has ``solver_lhsN`` (a range), ``solver_relN`` (1 ``<=``,
                2 ``=``, 3 ``>=``, 4 int, 5 bin, 6 dif) and ``solver_rhsN`` (a number, a reference, or
                ``integer`` / ``binary`` / ``AllDifferent`` for relations 4-6)
=============== =========================================================================================

Only what a gradient method can honour is accepted: bounds on variable cells (``>=``, ``<=`` or ``=`` a
number or a constant cell). Integer, binary and all-different constraints, and constraints on formula cells
(general, possibly non-linear constraints), are refused by :func:`check_constraints` with the constraint named.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from xlcf.errors import SolverModelError, WorkbookError, quote
from xlcf.ooxml.refs import Area, parse_range, split_areas

SENSES = ("min", "max", "value")
TYP_TO_SENSE = {1: "max", 2: "min", 3: "value"}
REL_TEXT = {1: "<=", 2: "=", 3: ">=", 4: "int", 5: "bin", 6: "dif"}
REL_WORDS = {4: "integer", 5: "binary", 6: "all-different (AllDifferent)"}


@dataclass(frozen=True)
class Constraint:
    """``lhs rel rhs``; ``rhs`` is a number or an Area (resolved to numbers when the model is built)."""

    index: int  # N of solver_lhsN (0 for a --bound flag)
    lhs: Area
    rel: str  # "<=", "=", ">=", "int", "bin", "dif"
    rhs: float | Area | None

    def describe(self) -> str:
        rhs = self.rhs.qualified() if isinstance(self.rhs, Area) else ("" if self.rhs is None else f"{self.rhs:g}")
        return f"{self.lhs.ref} {self.rel} {rhs}".strip()

    @property
    def source(self) -> str:
        return f"solver_lhs{self.index}/solver_rel{self.index}/solver_rhs{self.index}" if self.index else "--bound"


@dataclass(frozen=True)
class SolverModel:
    sheet: str
    objective: Area  # one cell
    variables: tuple[Area, ...]
    sense: str = "min"  # "min" | "max" | "value"
    target: float = 0.0  # for "value"
    nonnegative: bool = False  # solver_neg = 1
    constraints: tuple[Constraint, ...] = ()
    source: str = "names"  # "names" | "flags"
    notes: list[str] = field(default_factory=list)

    @property
    def objective_ref(self) -> str:
        return f"{self.objective.sheet}!{self.objective.ref}"

    def describe(self) -> dict:
        return {
            "objective": self.objective_ref,
            "variables": [a.qualified() for a in self.variables],
            "sense": self.sense,
            "target": self.target if self.sense == "value" else None,
            "nonnegative": self.nonnegative,
            "constraints": [c.describe() for c in self.constraints],
            "source": self.source,
        }


# ----------------------------------------------------------------------------------------------------------------
# From the stored names


def solver_names(all_names: Mapping[str, str]) -> dict[str, str]:
    """The ``solver_*`` entries of a name -> value mapping (keys lower-cased, a leading ``=`` dropped)."""
    out = {}
    for key, value in all_names.items():
        k = key.rsplit("!", 1)[-1].lower()
        if k.startswith("solver_"):
            text = str(value).strip()
            out[k] = text.removeprefix("=")
    return out


def has_model(all_names: Mapping[str, str]) -> bool:
    names = solver_names(all_names)
    return "solver_opt" in names or "solver_adj" in names


def _where(sheet: str, name: str) -> str:
    return f"{sheet}!{name}"


def _number(text: str, sheet: str, name: str) -> float:
    raw = text.strip().strip('"')
    try:
        value = float(raw)
    except ValueError:
        raise SolverModelError(
            f"expected a number, found {quote(text)}", where=_where(sheet, name), field=name
        ) from None
    if not math.isfinite(value):
        raise SolverModelError(f"expected a finite number, found {quote(text)}", where=_where(sheet, name), field=name)
    return value


def _areas(text: str, sheet: str, name: str, what: str) -> list[Area]:
    if "#REF!" in text.upper():
        raise SolverModelError(
            f"the Solver model's {what} is #REF! (its cells were deleted); set it again in "
            f"Data > Solver or give --objective/--vars",
            where=_where(sheet, name),
            field=name,
        )
    try:
        return [parse_range(part, sheet) for part in split_areas(text)]
    except WorkbookError:
        raise SolverModelError(
            f"the Solver model's {what} {quote(text)} is not a range of cells", where=_where(sheet, name), field=name
        ) from None


def model_from_names(sheet: str, all_names: Mapping[str, str]) -> SolverModel:
    """The model stored in ``sheet`` (``all_names``: the names visible from that sheet, sheet scope first, as
    ``Package.defined_names(sheet)`` gives them). SolverModelError naming ``sheet!solver_...`` when it is absent
    or malformed."""
    names = solver_names(all_names)
    if "solver_opt" not in names:
        raise SolverModelError(
            "the sheet has no Solver model (no solver_opt name): set one in Data > Solver, "
            "or give --objective CELL --vars RANGES",
            where=sheet,
        )
    opt = _areas(names["solver_opt"], sheet, "solver_opt", "objective")
    if len(opt) != 1 or opt[0].shape != (1, 1):
        raise SolverModelError(
            f"the Solver model's objective must be one cell, found {quote(names['solver_opt'])}",
            where=_where(sheet, "solver_opt"),
            field="solver_opt",
        )
    if "solver_adj" not in names:
        raise SolverModelError(
            "the Solver model has no variable cells (no solver_adj name)",
            where=_where(sheet, "solver_adj"),
            field="solver_adj",
        )
    adj = _areas(names["solver_adj"], sheet, "solver_adj", "variable cells")
    typ = int(_number(names.get("solver_typ", "2"), sheet, "solver_typ"))
    if typ not in TYP_TO_SENSE:
        raise SolverModelError(
            f"solver_typ must be 1 (max), 2 (min) or 3 (value of); found {typ}",
            where=_where(sheet, "solver_typ"),
            field="solver_typ",
        )
    target = _number(names.get("solver_val", "0"), sheet, "solver_val") if typ == 3 else 0.0
    neg = names.get("solver_neg", "2").strip() in ("1", "TRUE", "true")
    count = int(_number(names.get("solver_num", "0"), sheet, "solver_num"))
    constraints = []
    for i in range(1, count + 1):
        lhs_name, rel_name, rhs_name = f"solver_lhs{i}", f"solver_rel{i}", f"solver_rhs{i}"
        if lhs_name not in names or rel_name not in names:
            raise SolverModelError(
                f"constraint {i} of {count} is incomplete ({lhs_name}/{rel_name} missing)",
                where=_where(sheet, lhs_name),
                field=lhs_name,
            )
        lhs = _areas(names[lhs_name], sheet, lhs_name, f"constraint {i}")
        if len(lhs) != 1:
            raise SolverModelError(
                f"constraint {i}: the left-hand side must be one range", where=_where(sheet, lhs_name), field=lhs_name
            )
        rel = int(_number(names[rel_name], sheet, rel_name))
        if rel not in REL_TEXT:
            raise SolverModelError(
                f"constraint {i}: unknown relation {rel} (Excel uses 1 <=, 2 =, 3 >=, 4 int, 5 bin, 6 dif)",
                where=_where(sheet, rel_name),
                field=rel_name,
            )
        rhs: float | Area | None = None
        if rel <= 3:
            text = names.get(rhs_name)
            if text is None:
                raise SolverModelError(
                    f"constraint {i} has no right-hand side ({rhs_name} missing)",
                    where=_where(sheet, rhs_name),
                    field=rhs_name,
                )
            rhs = _rhs(text, sheet, rhs_name, i)
        constraints.append(Constraint(i, lhs[0], REL_TEXT[rel], rhs))
    return SolverModel(sheet, opt[0], tuple(adj), TYP_TO_SENSE[typ], target, neg, tuple(constraints), "names")


def _rhs(text: str, sheet: str, name: str, i: int) -> float | Area:
    try:
        return float(text.strip().strip('"'))
    except ValueError:
        pass
    try:
        areas = _areas(text, sheet, name, f"constraint {i}'s right-hand side")
    except SolverModelError as err:
        if "#REF!" in str(err):
            raise
        raise SolverModelError(
            f"constraint {i}: the right-hand side {quote(text)} is a formula; only a number or "
            f"a reference to constant cells is supported",
            where=_where(sheet, name),
            field=name,
        ) from None
    if len(areas) != 1:
        raise SolverModelError(
            f"constraint {i}: the right-hand side must be one range", where=_where(sheet, name), field=name
        )
    return areas[0]


# ----------------------------------------------------------------------------------------------------------------
# From flags


def parse_bound(text: str, sheet: str) -> Constraint:
    """``'B26:F40>=0'``, ``'A2<=1.5'``, ``'A2=3'`` or ``'0<=A2:B2'`` -> Constraint (index 0)."""
    raw = text.replace(" ", "")
    for op in (">=", "<=", "=>", "=<", "="):
        if op in raw:
            left, _, right = raw.partition(op)
            break
    else:
        raise SolverModelError(
            f"--bound {quote(text)}: expected RANGE>=NUMBER, RANGE<=NUMBER or RANGE=NUMBER", field="--bound"
        )
    op = {"=>": ">=", "=<": "<="}.get(op, op)

    def num(s):
        try:
            v = float(s)
        except ValueError:
            return None
        return v if math.isfinite(v) else None

    if num(left) is not None and num(right) is None:  # 0<=A2 -> A2>=0
        left, right = right, left
        op = {">=": "<=", "<=": ">=", "=": "="}[op]
    value = num(right)
    if value is None:
        raise SolverModelError(f"--bound {quote(text)}: the right-hand side must be a finite number", field="--bound")
    try:
        area = parse_range(left, sheet)
    except WorkbookError:
        raise SolverModelError(
            f"--bound {quote(text)}: {quote(left)} is not a range of cells", field="--bound"
        ) from None
    return Constraint(0, area, op, value)


def model_from_flags(
    sheet: str,
    objective: str,
    variables: str,
    *,
    sense: str = "min",
    target: float = 0.0,
    bounds: list[str] | tuple[str, ...] = (),
    nonnegative: bool = False,
) -> SolverModel:
    """``--objective V42 --vars B26:F40,H20:V24 [--max|--min|--value X] [--bound 'B26:F40>=0']``."""
    if sense not in SENSES:
        raise SolverModelError(f"sense must be one of {', '.join(SENSES)}; got {sense!r}")
    try:
        obj = parse_range(objective, sheet)
    except WorkbookError:
        raise SolverModelError(f"--objective {quote(objective)} is not a cell", field="--objective") from None
    if obj.shape != (1, 1):
        raise SolverModelError(f"--objective must be one cell; got {quote(objective)}", field="--objective")
    try:
        adj = [parse_range(part, sheet) for part in split_areas(variables)]
    except WorkbookError:
        raise SolverModelError(
            f"--vars {quote(variables)} is not a list of ranges (e.g. B26:F40,H20:V24)", field="--vars"
        ) from None
    if not adj:
        raise SolverModelError("--vars names no cells", field="--vars")
    if not math.isfinite(target):
        raise SolverModelError(f"--value must be a finite number; got {target}", field="--value")
    constraints = tuple(parse_bound(b, sheet) for b in bounds)
    return SolverModel(sheet, obj, tuple(adj), sense, float(target), nonnegative, constraints, "flags")
