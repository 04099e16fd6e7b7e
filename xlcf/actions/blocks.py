"""Find the blocks of a collaborative-filtering sheet: ratings, factor blocks, biases, predictions, RMSE.

Three ways, tried in this order (explicit ranges, when given, always win):

(a) sheet-scoped defined names ``ratings``, ``user_factors``, ``movie_factors`` (+ ``user_bias``, ``movie_bias``,
    ``predictions``, ``rmse``) as ``xlcf new collab`` writes them;
(b) the Excel Solver model stored in the sheet: ``solver_opt`` (objective cell) whose formula names the ratings and
    prediction ranges (e.g. ``=SQRT(SUMXMY2(H2:V16,H25:V39)/COUNT(H2:V16))``), and the prediction cells' formulas
    (``IF(H2="",0,MMULT($B25:$F25,H$19:H$23))`` [+ ``H$18+$A25``]) which name the user-factor row, movie-factor
    column and bias cells; ``solver_adj`` (adjustable cells) must contain every block the fit would write;
(c) explicit ranges (``--ratings H2:V16 --user-factors B25:F39 --movie-factors H19:V23 ...``).

Prediction cells are then "understood" one by one (:func:`understand_predictions`): a formula is understood when it
is the MMULT of exactly its user's factor row and its movie's factor column (plus exactly its user's and movie's
bias cells on a bias sheet), optionally wrapped in ``IF(rating="",c, ...)``. Only understood cells get new cached
values.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from xlcf.errors import WorkbookError, quote
from xlcf.ooxml.package import Package
from xlcf.ooxml.refs import Area, cell_ref, parse_range, sheet_cell, split_top_level

# A reference token in a formula: optional sheet, a cell, optional ":cell".
_REF_TOKEN = re.compile(
    r"(?<![A-Za-z0-9_.$])"
    r"(?:(?P<sheet>'(?:[^']|'')+'|[A-Za-z_][A-Za-z0-9_.]*)!)?"
    r"(?P<a>\$?[A-Za-z]{1,3}\$?[0-9]{1,7})(?::(?P<b>\$?[A-Za-z]{1,3}\$?[0-9]{1,7}))?"
    r"(?![A-Za-z0-9_(.!])"
)
_NAME_TOKEN = re.compile(r"(?<![A-Za-z0-9_.$'!])(?P<name>[A-Za-z_\\][A-Za-z0-9_.]*)(?![A-Za-z0-9_.(!'])")
_STRING = re.compile(r'"(?:[^"]|"")*"')


@dataclass
class SheetBlocks:
    """Where the fit reads and writes on one sheet."""

    sheet: str
    source: str  # "names" | "solver" | "ranges"
    ratings: Area
    user_factors: Area
    movie_factors: Area
    user_bias: Area | None = None
    movie_bias: Area | None = None
    predictions: Area | None = None
    rmse: Area | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def n_users(self) -> int:
        return self.ratings.shape[0]

    @property
    def n_movies(self) -> int:
        return self.ratings.shape[1]

    @property
    def factors(self) -> int:
        return self.user_factors.shape[1]

    @property
    def model(self) -> str:
        return "bias" if self.user_bias is not None else "dot"

    def describe(self) -> dict:
        out = {
            "source": self.source,
            "ratings": self.ratings.ref,
            "user_factors": self.user_factors.ref,
            "movie_factors": self.movie_factors.ref,
        }
        for key in ("user_bias", "movie_bias", "predictions", "rmse"):
            area = getattr(self, key)
            if area is not None:
                out[key] = area.ref
        return out

    def user_bias_cell(self, i: int) -> tuple[int, int]:
        b = self.user_bias
        assert b is not None, "a dot sheet has no bias cells"
        return (b.top + i, b.left) if b.shape[1] == 1 else (b.top, b.left + i)

    def movie_bias_cell(self, j: int) -> tuple[int, int]:
        b = self.movie_bias
        assert b is not None, "a dot sheet has no bias cells"
        return (b.top, b.left + j) if b.shape[0] == 1 else (b.top + j, b.left)


# ----------------------------------------------------------------------------------------------------------------
# Formula references


@dataclass(frozen=True)
class FormulaRef:
    area: Area
    text: str
    start: int
    end: int


def formula_refs(formula: str, sheet: str, pkg: Package | None = None) -> list[FormulaRef]:
    """Every cell/range reference of a formula (string literals skipped), unqualified ones on ``sheet``; with
    ``pkg``, defined names that refer to ranges are resolved too."""
    text = formula[1:] if formula.startswith("=") else formula
    offset = 1 if formula.startswith("=") else 0
    refs: list[FormulaRef] = []
    segments, i = [], 0
    for m in _STRING.finditer(text):
        segments.append((i, text[i : m.start()]))
        i = m.end()
    segments.append((i, text[i:]))
    for base, seg in segments:
        taken = []
        for m in _REF_TOKEN.finditer(seg):
            try:
                area = parse_range(m.group(0), sheet)  # also unquotes a 'quoted sheet'! prefix
            except WorkbookError:
                continue
            refs.append(FormulaRef(area, m.group(0), base + m.start() + offset, base + m.end() + offset))
            taken.append((m.start(), m.end()))
        if pkg is None:
            continue
        for m in _NAME_TOKEN.finditer(seg):
            if any(a <= m.start() < b for a, b in taken):
                continue
            name = m.group("name")
            if name.upper() in ("TRUE", "FALSE"):
                continue
            areas = pkg.name_areas(sheet, name)
            if areas and len(areas) == 1:
                refs.append(FormulaRef(areas[0], name, base + m.start() + offset, base + m.end() + offset))
    refs.sort(key=lambda r: r.start)
    return refs


@dataclass
class PredictionFormula:
    """The structure of one prediction formula."""

    user_row: Area
    movie_col: Area
    bias_cells: list[Area]
    rating_cell: Area | None
    blank_value: float | str | None  # value of the formula when the rating cell is blank (IF wrapper)


def _strip_parens(text: str) -> str:
    while text.startswith("(") and text.endswith(")") and _balanced(text[1:-1]):
        text = text[1:-1]
    return text


def _balanced(text: str) -> bool:
    depth = 0
    for ch in text:
        depth += ch == "("
        depth -= ch == ")"
        if depth < 0:
            return False
    return depth == 0


def parse_prediction_formula(formula: str, sheet: str, pkg: Package | None = None) -> PredictionFormula | None:
    """Recognise ``[IF(R="",c,] MMULT(user_row, movie_col) [+ bias cells] [)]`` (also ``IF(ISBLANK(R),c,..)``,
    ``IF(R<>"",..,c)`` and ``SUMPRODUCT(user_row,TRANSPOSE(movie_col))``); None when the formula is anything else."""
    if not formula:
        return None
    refs = formula_refs(formula, sheet, pkg)
    body = formula[1:] if formula.startswith("=") else formula
    shift = 1 if formula.startswith("=") else 0
    # Skeleton: every reference replaced by §n§, whitespace dropped, functions upper-cased.
    pieces, pos = [], 0
    for n, r in enumerate(refs):
        pieces.append(body[pos : r.start - shift])
        pieces.append(f"§{n}§")
        pos = r.end - shift
    pieces.append(body[pos:])
    skeleton = re.sub(r"\s+", "", "".join(pieces))
    skeleton = re.sub(r"_xlfn\.", "", skeleton, flags=re.I)
    skeleton = re.sub(r"[A-Za-z]+(?=\()", lambda m: m.group(0).upper(), skeleton)

    rating_cell: Area | None = None
    blank_value: float | str | None = None
    m = re.fullmatch(r'IF\(§(\d+)§="",(.*?),(.+)\)', skeleton) or re.fullmatch(
        r"IF\(ISBLANK\(§(\d+)§\),(.*?),(.+)\)", skeleton
    )
    m_inverse = re.fullmatch(r'IF\(§(\d+)§<>"",(.+),([^,]*)\)', skeleton)
    if m:
        ref_n, const, expr = m.groups()
    elif m_inverse:
        ref_n, expr, const = m_inverse.groups()
    else:
        ref_n, const, expr = None, None, skeleton
    if ref_n is not None:
        rating_cell = refs[int(ref_n)].area
        if rating_cell.shape != (1, 1):
            return None
        if const == '""':
            blank_value = ""
        else:
            try:
                blank_value = float(const or "")
            except ValueError:
                return None
    expr = _strip_parens(expr)
    terms = split_top_level(expr, "+")
    core = None
    bias_cells = []
    for term in terms:
        term = _strip_parens(term)
        mm = re.fullmatch(r"MMULT\(§(\d+)§,§(\d+)§\)", term) or re.fullmatch(
            r"SUMPRODUCT\(§(\d+)§,TRANSPOSE\(§(\d+)§\)\)", term
        )
        if mm and core is None:
            core = (refs[int(mm.group(1))].area, refs[int(mm.group(2))].area)
            continue
        mb = re.fullmatch(r"§(\d+)§", term)
        if mb and refs[int(mb.group(1))].area.shape == (1, 1):
            bias_cells.append(refs[int(mb.group(1))].area)
            continue
        return None
    if core is None:
        return None
    user_row, movie_col = core
    if user_row.shape[0] != 1 or movie_col.shape[1] != 1 or user_row.shape[1] != movie_col.shape[0]:
        return None
    return PredictionFormula(user_row, movie_col, bias_cells, rating_cell, blank_value)


def _same(a: Area, b: Area) -> bool:
    return (a.sheet, a.top, a.left, a.bottom, a.right) == (b.sheet, b.top, b.left, b.bottom, b.right)


def _cell_area(sheet: str, rc: tuple[int, int]) -> Area:
    return Area(sheet, rc[0], rc[1], rc[0], rc[1])


def understand_predictions(pkg: Package, blocks: SheetBlocks) -> dict[str, tuple[int, int, float | str | None]]:
    """Prediction cells whose formula computes exactly the sheet model for its (user, movie):
    ref -> (i, j, blank_value). Cells with any other formula are left out (their cached values are not touched)."""
    out: dict[str, tuple[int, int, float | str | None]] = {}
    if blocks.predictions is None:
        return out
    s = blocks.sheet
    uf, mf = blocks.user_factors, blocks.movie_factors
    for i, row in enumerate(pkg.read_range(s, blocks.predictions)):
        for j, cell in enumerate(row):
            if not cell.formula:
                continue
            parsed = parse_prediction_formula(cell.formula, s, pkg)
            if parsed is None:
                continue
            if not _same(parsed.user_row, Area(s, uf.top + i, uf.left, uf.top + i, uf.right)):
                continue
            if not _same(parsed.movie_col, Area(s, mf.top, mf.left + j, mf.bottom, mf.left + j)):
                continue
            if blocks.user_bias is not None:
                wanted = {(_cell_area(s, blocks.user_bias_cell(i))), (_cell_area(s, blocks.movie_bias_cell(j)))}
                if len(parsed.bias_cells) != 2 or set(parsed.bias_cells) != wanted:
                    continue
            elif parsed.bias_cells:
                continue
            if parsed.rating_cell is not None and not _same(
                parsed.rating_cell, _cell_area(s, (blocks.ratings.top + i, blocks.ratings.left + j))
            ):
                continue
            out[cell.ref] = (i, j, parsed.blank_value)
    return out


def rmse_formula_understood(pkg: Package, blocks: SheetBlocks) -> bool:
    """True when the RMSE cell's formula is a square root over the ratings and prediction ranges (by reference or
    by name): its value is then the RMSE over rated cells, which the fit computes and caches."""
    if blocks.rmse is None or blocks.predictions is None:
        return False
    cell = pkg.read_cell(blocks.sheet, blocks.rmse.ref)
    if not cell.formula or "SQRT" not in cell.formula.upper():
        return False
    areas = [r.area for r in formula_refs(cell.formula, blocks.sheet, pkg)]
    return any(_same(a, blocks.ratings) for a in areas) and any(_same(a, blocks.predictions) for a in areas)


# ----------------------------------------------------------------------------------------------------------------
# Finding the blocks


def _one_area(pkg: Package, sheet: str, name: str, *, required: bool = False) -> Area | None:
    areas = pkg.name_areas(sheet, name)
    if areas is None:
        if required:
            raise WorkbookError(f"sheet {quote(sheet)} has no defined name {quote(name)}")
        return None
    if len(areas) != 1:
        raise WorkbookError(f"the name '{name}' refers to {len(areas)} ranges; expected one block", where=sheet)
    area = areas[0]
    if area.sheet != sheet:
        raise WorkbookError(f"the name '{name}' refers to sheet '{area.sheet}', not to '{sheet}'", where=sheet)
    return area


def _explicit(sheet: str, label: str, ref: str | None) -> Area | None:
    if ref is None:
        return None
    area = parse_range(ref, sheet)
    if area.sheet != sheet:
        raise WorkbookError(f"--{label.replace('_', '-')} {ref}: must be a range on sheet '{sheet}'")
    return area


def find_blocks(
    pkg: Package,
    sheet: str,
    *,
    ratings: str | None = None,
    user_factors: str | None = None,
    movie_factors: str | None = None,
    user_bias: str | None = None,
    movie_bias: str | None = None,
    rmse: str | None = None,
    predictions: str | None = None,
) -> SheetBlocks:
    """Locate the blocks on ``sheet`` (explicit ranges > sheet names > Solver model) and check their shapes."""
    pkg.sheet_part(sheet)  # WorkbookError naming the sheets when absent
    explicit = dict(
        ratings=ratings,
        user_factors=user_factors,
        movie_factors=movie_factors,
        user_bias=user_bias,
        movie_bias=movie_bias,
        rmse=rmse,
        predictions=predictions,
    )
    if any(v is not None for v in explicit.values()):
        missing = [k for k in ("ratings", "user_factors", "movie_factors") if explicit[k] is None]
        if missing:
            raise WorkbookError(
                "explicit ranges need --ratings, --user-factors and --movie-factors (missing: "
                + ", ".join("--" + m.replace("_", "-") for m in missing)
                + ")"
            )
        areas = {k: _explicit(sheet, k, v) for k, v in explicit.items()}
        blocks = SheetBlocks(
            sheet,
            "ranges",
            _required(areas["ratings"]),
            _required(areas["user_factors"]),
            _required(areas["movie_factors"]),
            areas["user_bias"],
            areas["movie_bias"],
            areas["predictions"],
            areas["rmse"],
        )
        if blocks.predictions is None:
            blocks.predictions = _predictions_from_rmse(pkg, blocks)
    elif all(pkg.name_areas(sheet, n) is not None for n in ("ratings", "user_factors", "movie_factors")):
        blocks = SheetBlocks(
            sheet,
            "names",
            _required(_one_area(pkg, sheet, "ratings")),
            _required(_one_area(pkg, sheet, "user_factors")),
            _required(_one_area(pkg, sheet, "movie_factors")),
            _one_area(pkg, sheet, "user_bias"),
            _one_area(pkg, sheet, "movie_bias"),
            _one_area(pkg, sheet, "predictions"),
            _one_area(pkg, sheet, "rmse"),
        )
    elif pkg.name_areas(sheet, "solver_opt"):
        blocks = _blocks_from_solver(pkg, sheet)
    else:
        raise WorkbookError(
            f"sheet '{sheet}' has no xlcf names (ratings, user_factors, movie_factors) and no Solver model "
            f"(solver_opt); pass the ranges, e.g. --ratings H2:V16 --user-factors B25:F39 --movie-factors H19:V23"
        )
    check_shapes(blocks)
    return blocks


def _predictions_from_rmse(pkg: Package, blocks: SheetBlocks) -> Area | None:
    """With explicit ranges and --rmse, the prediction range is the other same-shaped range the RMSE formula names."""
    if blocks.rmse is None:
        return None
    cell = pkg.read_cell(blocks.sheet, blocks.rmse.ref)
    if not cell.formula:
        return None
    for ref in formula_refs(cell.formula, blocks.sheet, pkg):
        if (
            ref.area.shape == blocks.ratings.shape
            and not _same(ref.area, blocks.ratings)
            and ref.area.sheet == blocks.sheet
        ):
            return ref.area
    return None


def _required(area: Area | None) -> Area:
    """A block the caller has checked is present."""
    assert area is not None
    return area


def _blocks_from_solver(pkg: Package, sheet: str) -> SheetBlocks:
    opt_areas = pkg.name_areas(sheet, "solver_opt") or []
    if len(opt_areas) != 1 or opt_areas[0].shape != (1, 1):
        raise WorkbookError("the Solver objective (solver_opt) is not a single cell", where=sheet)
    opt = opt_areas[0]
    if opt.sheet != sheet:
        raise WorkbookError(f"the Solver objective (solver_opt) is on sheet '{opt.sheet}'", where=sheet)
    where = f"{sheet}!{opt.ref}"
    objective = pkg.read_cell(sheet, opt.ref)
    if not objective.formula:
        raise WorkbookError("the Solver objective cell holds no formula", where=where)
    # The ratings and predictions: two same-shaped ranges of the objective, one of values, one of formulas.
    candidates = [
        r.area for r in formula_refs(objective.formula, sheet, pkg) if r.area.sheet == sheet and r.area.shape != (1, 1)
    ]
    ratings = predictions = None
    for a in candidates:
        for b in candidates:
            if a.shape != b.shape or _same(a, b):
                continue
            # b is the prediction range when its first cell is a prediction formula (MMULT of factor blocks)
            first = pkg.read_cell(sheet, cell_ref(b.top, b.left))
            if first.formula and parse_prediction_formula(first.formula, sheet, pkg) is not None:
                ratings, predictions = a, b
                break
        if ratings is not None:
            break
    if ratings is None or predictions is None:
        raise WorkbookError(
            f"cannot find the ratings and prediction ranges in the Solver objective "
            f"{objective.formula} (expected two same-shaped ranges: the ratings, and predictions "
            f"computed with MMULT); pass --ratings/--user-factors/--movie-factors",
            where=where,
        )
    top_left = pkg.read_cell(sheet, cell_ref(predictions.top, predictions.left))
    parsed = parse_prediction_formula(top_left.formula or "", sheet, pkg)
    if parsed is None:
        raise WorkbookError(
            f"cannot read the model from the prediction formula "
            f"{top_left.formula} (expected MMULT(user factor row, movie factor column) "
            f"[+ bias cells]); pass --ratings/--user-factors/--movie-factors",
            where=f"{sheet}!{top_left.ref}",
        )
    n_users, n_movies = predictions.shape
    ur, mc = parsed.user_row, parsed.movie_col
    user_factors = Area(sheet, ur.top, ur.left, ur.top + n_users - 1, ur.right)
    movie_factors = Area(sheet, mc.top, mc.left, mc.bottom, mc.left + n_movies - 1)
    user_bias = movie_bias = None
    if parsed.bias_cells:
        if len(parsed.bias_cells) != 2:
            raise WorkbookError(
                f"the prediction formula adds {len(parsed.bias_cells)} "
                f"single cells; expected none (dot) or two (user bias + movie bias)",
                where=f"{sheet}!{top_left.ref}",
            )
        user_bias, movie_bias = _bias_roles(pkg, sheet, predictions, parsed, n_users, n_movies)
    blocks = SheetBlocks(sheet, "solver", ratings, user_factors, movie_factors, user_bias, movie_bias, predictions, opt)
    # Solver only changes its adjustable cells: the fit must not write anything else.
    adj = pkg.name_areas(sheet, "solver_adj")
    if adj:
        for label in ("user_factors", "movie_factors", "user_bias", "movie_bias"):
            area = getattr(blocks, label)
            if area is None:
                continue
            if not _covered(area, [a for a in adj if a.sheet == sheet]):
                raise WorkbookError(
                    f"the {label.replace('_', ' ')} {area.ref} read from the prediction "
                    f"formulas are not among Solver's adjustable cells (solver_adj = "
                    f"{', '.join(a.ref for a in adj)}); xlcf writes only cells Solver would change",
                    where=sheet,
                )
    return blocks


def _bias_roles(pkg, sheet, predictions: Area, parsed: PredictionFormula, n_users, n_movies):
    """Which added cell is the user bias and which the movie bias: compare with the next prediction cell down
    (the user bias moves with the row) or, for a one-row grid, across; else fall back on the $ anchors."""
    a, b = parsed.bias_cells
    neighbour = None
    if n_users > 1:
        cell = pkg.read_cell(sheet, cell_ref(predictions.top + 1, predictions.left))
        neighbour = ("down", parse_prediction_formula(cell.formula or "", sheet, pkg))
    elif n_movies > 1:
        cell = pkg.read_cell(sheet, cell_ref(predictions.top, predictions.left + 1))
        neighbour = ("right", parse_prediction_formula(cell.formula or "", sheet, pkg))
    user_first = None
    if neighbour and neighbour[1] is not None and len(neighbour[1].bias_cells) == 2:
        direction, other = neighbour[0], neighbour[1]
        moved = {(c.top, c.left) for c in other.bias_cells}
        step = (1, 0) if direction == "down" else (0, 1)
        a_moves = (a.top + step[0], a.left + step[1]) in moved and (a.top, a.left) not in moved
        b_moves = (b.top + step[0], b.left + step[1]) in moved and (b.top, b.left) not in moved
        if a_moves != b_moves:
            # moving down: the user bias moves; moving right: the movie bias moves
            user_first = a_moves if direction == "down" else b_moves
    if user_first is None:
        # Same row as the user factor row -> user bias; same column as the movie factor column -> movie bias.
        if a.top == parsed.user_row.top or b.left == parsed.movie_col.left:
            user_first = True
        elif b.top == parsed.user_row.top or a.left == parsed.movie_col.left:
            user_first = False
        else:
            raise WorkbookError(
                "cannot tell the user bias from the movie bias; pass --user-bias and --movie-bias",
                where=sheet_cell(sheet, predictions.top, predictions.left),
            )
    ub, mb = (a, b) if user_first else (b, a)
    user_bias = Area(sheet, ub.top, ub.left, ub.top + n_users - 1, ub.left)
    movie_bias = Area(sheet, mb.top, mb.left, mb.top, mb.left + n_movies - 1)
    return user_bias, movie_bias


def _covered(area: Area, areas: list[Area]) -> bool:
    for r in range(area.top, area.bottom + 1):
        for c in range(area.left, area.right + 1):
            if not any(a.top <= r <= a.bottom and a.left <= c <= a.right for a in areas):
                return False
    return True


def _overlap(a: Area, b: Area) -> bool:
    return not (a.bottom < b.top or b.bottom < a.top or a.right < b.left or b.right < a.left)


def check_shapes(blocks: SheetBlocks) -> None:
    """Users × k, k × movies, biases 1-D of the right length, predictions like the ratings; no overlaps."""
    s = blocks.sheet
    n_users, n_movies = blocks.ratings.shape
    uf_rows, k = blocks.user_factors.shape
    mf_k, mf_cols = blocks.movie_factors.shape
    r = f"ratings {blocks.ratings.ref} ({n_users} users x {n_movies} movies)"
    if uf_rows != n_users:
        raise WorkbookError(
            f"user factors {blocks.user_factors.ref} have {uf_rows} rows but the {r} has "
            f"{n_users} rows; expected {n_users} rows x k factors",
            where=s,
        )
    if mf_cols != n_movies:
        raise WorkbookError(
            f"movie factors {blocks.movie_factors.ref} have {mf_cols} columns but the {r} has "
            f"{n_movies} columns; expected k factors x {n_movies} columns",
            where=s,
        )
    if mf_k != k:
        raise WorkbookError(
            f"user factors {blocks.user_factors.ref} have {k} factors (columns) but movie "
            f"factors {blocks.movie_factors.ref} have {mf_k} (rows); they must match",
            where=s,
        )
    if (blocks.user_bias is None) != (blocks.movie_bias is None):
        raise WorkbookError(
            f"a bias model needs both user bias and movie bias ranges (got only "
            f"{'user' if blocks.user_bias is not None else 'movie'} bias)",
            where=s,
        )
    if blocks.user_bias is not None and blocks.movie_bias is not None:
        shape = blocks.user_bias.shape
        if min(shape) != 1 or max(shape) != n_users:
            raise WorkbookError(
                f"user bias {blocks.user_bias.ref} is {shape[0]}x{shape[1]}; expected one "
                f"column (or row) of {n_users} cells, one per user",
                where=s,
            )
        shape = blocks.movie_bias.shape
        if min(shape) != 1 or max(shape) != n_movies:
            raise WorkbookError(
                f"movie bias {blocks.movie_bias.ref} is {shape[0]}x{shape[1]}; expected one "
                f"row (or column) of {n_movies} cells, one per movie",
                where=s,
            )
    if blocks.predictions is not None and blocks.predictions.shape != blocks.ratings.shape:
        p = blocks.predictions.shape
        raise WorkbookError(f"predictions {blocks.predictions.ref} are {p[0]}x{p[1]} but the {r}", where=s)
    if blocks.rmse is not None and blocks.rmse.shape != (1, 1):
        raise WorkbookError(f"rmse {blocks.rmse.ref} must be a single cell", where=s)
    owned = [
        ("user factors", blocks.user_factors),
        ("movie factors", blocks.movie_factors),
        ("user bias", blocks.user_bias),
        ("movie bias", blocks.movie_bias),
    ]
    present: list[tuple[str, Area]] = [(n, a) for n, a in owned if a is not None]
    others = (
        present
        + [("ratings", blocks.ratings)]
        + ([("predictions", blocks.predictions)] if blocks.predictions is not None else [])
    )
    for i, (na, a) in enumerate(others):
        for nb, b in others[i + 1 :]:
            if _overlap(a, b):
                raise WorkbookError(f"{na} {a.ref} overlap {nb} {b.ref}", where=s)
