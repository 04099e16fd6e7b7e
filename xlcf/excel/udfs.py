"""Worksheet functions (UDFs): ``CF_FIT``, ``CF_PREDICT``, ``CF_RMSE``, ``CF_RECOMMEND``.

Windows desktop Excel imports them through the xlwings add-in (``UDF Modules = xlcf.udfs`` in the
``xlwings.conf`` sheet, then *Import Functions*); Excel on the web / Office.js gets them from ``xlcf serve``
(``/xlwings/custom-functions-*``), which decorates the same implementations with ``xlwings.server``'s
decorators (see :func:`build`). macOS desktop Excel has no UDF support in xlwings: use the macro or the server.

Rules every function follows (Excel calls them on every recalculation):

- ranges arrive as 2-D lists (``ndim=2``; numpy arrays work too) and are converted here: blank -> NaN;
  text/booleans/errors in a numeric block -> a readable message in the cell (never an exception into Excel);
- results are 2-D lists that spill as dynamic arrays; no ``expand`` (legacy dynamic arrays overwrite cells);
- never NaN/inf: xlwings turns NaN into #NUM! and inf breaks the JSON of the server path;
- ``CF_FIT`` and ``CF_RECOMMEND`` train, so results are cached on the inputs (a recalculation with the same
  inputs returns the cached answer) and inputs above :data:`MAX_CELLS` are refused (full data -> the macro).
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import logging
import math
import types
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import numpy as np

from xlcf import catalog
from xlcf.errors import UdfInputError, XlcfError

MAX_CELLS = 100_000
TRAINING_FUNCTIONS = ("cf_fit", "cf_recommend")  # they fit a model (the server runs them in a worker)
CACHE_SIZE = 32
_cache: OrderedDict[str, tuple[np.ndarray, np.ndarray | None]] = OrderedDict()
logger = logging.getLogger("xlcf.excel")
# Set by the server (serve_mode): fits stop at a time cap; unexpected errors show their class only.
_server: dict[str, Any] = {"on": False, "time_limit": None}

__all__ = ["MAX_CELLS", "build", "cf_fit", "cf_predict", "cf_recommend", "cf_rmse", "clear_cache"]


# ------------------------------------------------------------------------------------------ conversion


def _is_blank(value) -> bool:
    if value is None:
        return True
    if isinstance(value, str) and value.strip() == "":
        return True
    return bool(isinstance(value, float) and math.isnan(value))


def to_matrix(values, what: str, *, allow_blank: bool = True) -> np.ndarray:
    """A 2-D float array from what xlwings hands a UDF (scalar, 1-D or 2-D list, numpy array).
    Blank -> NaN; anything non-numeric -> UdfInputError naming the row/column inside the range."""
    if isinstance(values, np.ndarray):
        values = values.tolist()
    if not isinstance(values, (list, tuple)):
        values = [[values]]
    elif values and not isinstance(values[0], (list, tuple)):
        values = [list(values)]
    if not values or not values[0]:
        raise UdfInputError(f"{what} is empty")
    width = len(values[0])
    out = np.full((len(values), width), np.nan, dtype=np.float64)
    for i, row in enumerate(values):
        if len(row) != width:
            raise UdfInputError(f"{what} is not rectangular")
        for j, value in enumerate(row):
            if _is_blank(value):
                if not allow_blank:
                    raise UdfInputError(f"{what} row {i + 1} column {j + 1} is empty; expected a number")
                continue
            if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
                raise UdfInputError(
                    f"{what} row {i + 1} column {j + 1} holds {str(value)[:30]!r}; expected a number or a blank"
                )
            number = float(value)
            if not math.isfinite(number):
                raise UdfInputError(f"{what} row {i + 1} column {j + 1} is not a finite number")
            out[i, j] = number
    return out


def _scalar(value, what: str, default, kind: type):
    """Scalar argument: blank -> default; a 1x1 range -> its value; checked type."""
    while isinstance(value, (list, tuple)) and len(value) == 1:
        value = value[0]
    if isinstance(value, np.ndarray) and value.size == 1:
        value = value.item()
    if _is_blank(value):
        return default
    if kind is str:
        if not isinstance(value, str):
            raise UdfInputError(f"{what} must be text, got {value!r}")
        return value.strip()
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise UdfInputError(f"{what} must be a number, got {str(value)[:30]!r}")
    if kind is int:
        if float(value) != int(value):
            raise UdfInputError(f"{what} must be a whole number, got {value!r}")
        return int(value)
    if not math.isfinite(float(value)):
        raise UdfInputError(f"{what} must be a finite number")
    return float(value)


def _vector(values, what: str, length: int) -> np.ndarray | None:
    if values is None or (not isinstance(values, (list, tuple, np.ndarray)) and _is_blank(values)):
        return None
    arr = to_matrix(values, what, allow_blank=False).ravel()
    if arr.size != length:
        raise UdfInputError(f"{what} has {arr.size} values, expected {length}")
    return arr


def _finite_rows(matrix: np.ndarray) -> list[list[float]]:
    if not np.all(np.isfinite(matrix)):
        raise UdfInputError("the result holds NaN or infinite numbers (training diverged? try a smaller lr)")
    return [[float(v) for v in row] for row in matrix]


def serve_mode(time_limit: float | None) -> None:
    """``xlcf serve``'s worker: CF_FIT/CF_RECOMMEND stop training after ``time_limit`` seconds (the cell says so)
    and an unexpected error shows its class name only (its text may hold server paths; it goes to the log)."""
    _server.update(on=True, time_limit=time_limit)


def _error_text(func: str, err: Exception) -> list[list[str]]:
    """What a cell shows for bad input: one readable line (never an exception into Excel)."""
    if isinstance(err, (UdfInputError, XlcfError)):
        return [[f"{func}: {err}"]]
    if _server["on"]:
        logger.exception("%s failed", func)
        return [[f"{func}: internal error ({type(err).__name__}); see the server log"]]
    return [[f"{func}: {type(err).__name__}: {err}"]]


def _safe(func_name: str):
    def wrap(impl: Callable) -> Callable:
        @functools.wraps(impl)  # keeps impl's signature (inspect follows __wrapped__) and docstring
        def run(*args, **kwargs):
            try:
                return impl(*args, **kwargs)
            except Exception as err:
                return _error_text(func_name, err)

        return run

    return wrap


# ------------------------------------------------------------------------------------------ the model


def _cache_key(*parts) -> str:
    digest = hashlib.sha256()
    for part in parts:
        if isinstance(part, np.ndarray):
            digest.update(str(part.shape).encode())
            digest.update(np.ascontiguousarray(part).tobytes())
        else:
            digest.update(repr(part).encode())
        digest.update(b"|")
    return digest.hexdigest()


def clear_cache() -> None:
    _cache.clear()


def fit_count() -> int:
    """How many fits actually ran (tests check that a recalculation with the same inputs did not retrain)."""
    return _stats["fits"]


_stats = {"fits": 0}


def _fitted_predictions(ratings: np.ndarray, factors, optimizer, epochs, lr, seed, bias=False, wd=None) -> np.ndarray:
    """The predicted matrix of a fit of ``ratings`` (cached on the inputs). The other arguments are the cells the
    worksheet function was given (blank -> default)."""
    return _fitted(ratings, factors, optimizer, epochs, lr, seed, bias, wd)[0]


def _fitted(ratings: np.ndarray, factors, optimizer, epochs, lr, seed, bias=False, wd=None):
    """(predicted matrix, posterior predictive std matrix or None) of a fit of ``ratings``, cached on the
    inputs; the std comes with a Bayesian fit (optimizer gibbs)."""
    factors = _scalar(factors, "factors", 5, int)
    default_optimizer = catalog.SHEET_DEFAULTS["optimizer"]
    optimizer = _scalar(optimizer, "optimizer", default_optimizer, str) or default_optimizer
    epochs = _scalar(epochs, "epochs", None, int)
    lr = _scalar(lr, "lr", None, float)
    wd = _scalar(wd, "wd", None, float)
    seed = _scalar(seed, "seed", 0, int)
    bias = bias if isinstance(bias, bool) else bool(_scalar(bias, "bias", 0, float))
    n_users, n_movies = ratings.shape
    if ratings.size > MAX_CELLS:
        raise UdfInputError(
            f"{ratings.size} cells is more than the {MAX_CELLS} a worksheet function fits; "
            "use the Fit button (macro), `xlcf fit` or `xlcf train` for full data"
        )
    rated = np.isfinite(ratings)
    if rated.sum() < 2:
        raise UdfInputError("ratings need at least 2 rated (numeric) cells")
    if factors < 1 or factors > 500:
        raise UdfInputError(f"factors must be between 1 and 500, got {factors}")
    key = _cache_key(ratings, factors, optimizer, epochs, lr, seed, bias, wd)
    if key in _cache:
        _cache.move_to_end(key)
        return _cache[key]
    from xlcf.actions.fit import fit_sheet_arrays
    from xlcf.lessons.collab import initial_parameters

    settings: dict[str, Any] = {"optimizer": optimizer, "seed": seed}
    if epochs is not None:
        settings["epochs"] = epochs
    if lr is not None:
        settings["lr"] = lr
    if wd is not None:
        settings["wd"] = wd
    # The lesson's start, drawn as a generated sheet of the same seed draws it: CF_FIT then gives the fit that
    # `xlcf fit` or the Fit button gives on that sheet.
    start = initial_parameters(n_users, n_movies, factors, seed)
    time_limit = _server["time_limit"]
    sheet_fit = fit_sheet_arrays(
        ratings,
        start.user_factors,
        start.movie_factors,
        start.user_bias if bias else None,
        start.movie_bias if bias else None,
        settings,
        init="keep",
        time_limit=time_limit,
    )
    _stats["fits"] += 1
    if time_limit is not None and sheet_fit.stopped_reason == "callback":  # not cached: a half-done fit
        raise UdfInputError(
            f"stopped after {time_limit:g} s ({sheet_fit.epochs} epochs), the server's time cap for "
            "fitting; ask for fewer epochs, or fit with the Fit button"
        )
    predictions = np.asarray(sheet_fit.predictions, dtype=np.float64)
    if predictions.shape != ratings.shape or not np.all(np.isfinite(predictions)):
        raise UdfInputError("training produced non-finite predictions (try a smaller lr)")
    std = sheet_fit.std  # the posterior predictive std of every cell (gibbs), else None
    _cache[key] = (predictions, std)
    while len(_cache) > CACHE_SIZE:
        _cache.popitem(last=False)
    return predictions, std


# ------------------------------------------------------------------------------------------ the UDFs


@_safe("CF_FIT")
def cf_fit(ratings, factors=5, optimizer="adam", epochs=None, lr=None, seed=0, bias=False, wd=None):
    """Fits latent factors to a ratings block (blank = unrated) and returns the predicted matrix, same shape."""
    predictions = _fitted_predictions(to_matrix(ratings, "ratings"), factors, optimizer, epochs, lr, seed, bias, wd)
    return _finite_rows(predictions)


@_safe("CF_PREDICT")
def cf_predict(user_factors, movie_factors, user_bias=None, movie_bias=None):
    """Predicted ratings: user_factors (users x k) times movie_factors (k x movies), plus optional biases."""
    users = to_matrix(user_factors, "user_factors", allow_blank=False)
    movies = to_matrix(movie_factors, "movie_factors", allow_blank=False)
    k = users.shape[1]
    if movies.shape[0] != k:
        if movies.shape[1] == k:  # movies x k given: the orientation is unambiguous, accept it
            movies = movies.T
        else:
            raise UdfInputError(
                f"user_factors has {k} columns but movie_factors is "
                f"{movies.shape[0]}x{movies.shape[1]}; expected {k} rows (k x movies)"
            )
    with np.errstate(all="ignore"):  # overflow is reported below as a message, not a warning
        predictions = users @ movies
    ub = _vector(user_bias, "user_bias", users.shape[0])
    mb = _vector(movie_bias, "movie_bias", movies.shape[1])
    with np.errstate(all="ignore"):
        if ub is not None:
            predictions = predictions + ub[:, None]
        if mb is not None:
            predictions = predictions + mb[None, :]
    return _finite_rows(predictions)


@_safe("CF_RMSE")
def cf_rmse(actual, predicted):
    """Root mean squared error over the rated (numeric) cells of actual."""
    truth = to_matrix(actual, "actual")
    guess = to_matrix(predicted, "predicted")
    if truth.shape != guess.shape:
        raise UdfInputError(
            f"actual is {truth.shape[0]}x{truth.shape[1]} but predicted is {guess.shape[0]}x{guess.shape[1]}"
        )
    rated = np.isfinite(truth)
    if not rated.any():
        raise UdfInputError("actual has no rated cells")
    if not np.all(np.isfinite(guess[rated])):
        raise UdfInputError("predicted is blank where actual is rated")
    return float(np.sqrt(np.mean((truth[rated] - guess[rated]) ** 2)))


@_safe("CF_RECOMMEND")
def cf_recommend(ratings, user, n=5, movie_labels=None, factors=5, optimizer="adam", epochs=None, lr=None, seed=0):
    """The n best unrated movies for a user row (1 = first row): label (or column number) and prediction, and
    with optimizer gibbs a third column: the prediction's posterior predictive std (the rating's +-)."""
    matrix = to_matrix(ratings, "ratings")
    row = _scalar(user, "user", None, int)
    if row is None or not 1 <= row <= matrix.shape[0]:
        raise UdfInputError(f"user must be a row number between 1 and {matrix.shape[0]}, got {user!r}")
    count = _scalar(n, "n", 5, int)
    if count < 1:
        raise UdfInputError(f"n must be at least 1, got {count}")
    labels = None
    if movie_labels is not None and not (
        not isinstance(movie_labels, (list, tuple, np.ndarray)) and _is_blank(movie_labels)
    ):
        flat = np.asarray(movie_labels, dtype=object).ravel().tolist()
        if len(flat) != matrix.shape[1]:
            raise UdfInputError(f"movie_labels has {len(flat)} cells, ratings has {matrix.shape[1]} columns")
        labels = ["" if _is_blank(v) else (int(v) if isinstance(v, float) and v.is_integer() else v) for v in flat]
    predictions, std = _fitted(matrix, factors, optimizer, epochs, lr, seed)
    unrated = np.flatnonzero(~np.isfinite(matrix[row - 1]))
    if unrated.size == 0:
        return [[f"CF_RECOMMEND: user row {row} has rated every movie"]]
    scores = predictions[row - 1, unrated]
    order = unrated[np.argsort(-scores, kind="stable")][:count]
    out = []
    for col in order:
        label = labels[col] if labels is not None else int(col + 1)
        out.append([label, float(predictions[row - 1, col])] + ([] if std is None else [float(std[row - 1, col])]))
    return out


# ------------------------------------------------------------------------------------------ decoration

_SIGNATURES = {
    # name: the range arguments (read with ndim=2)
    "cf_fit": ("ratings",),
    "cf_predict": ("user_factors", "movie_factors", "user_bias", "movie_bias"),
    "cf_rmse": ("actual", "predicted"),
    "cf_recommend": ("ratings", "movie_labels"),
}


def build(func, arg, ret) -> dict[str, Callable]:
    """Fresh copies of the four UDFs decorated with the given xlwings decorator set (``xw.func``/``xw.arg``/
    ``xw.ret`` for desktop Excel, ``xlwings.server``'s for Office.js). Range arguments are read with
    ``ndim=2`` (raw 2-D lists, converted here so that text gives a message rather than a converter error)."""
    impls = {"cf_fit": cf_fit, "cf_predict": cf_predict, "cf_rmse": cf_rmse, "cf_recommend": cf_recommend}
    out = {}
    for name, impl in impls.items():
        copy = _copy_function(impl, name)
        for range_arg in _SIGNATURES[name]:
            copy = arg(range_arg, ndim=2)(copy)
        copy = ret(ndim=2)(copy) if name != "cf_rmse" else copy
        out[name] = func(copy)
    return out


def _copy_function(impl: Callable, name: str) -> Callable:
    """A new function object with ``impl``'s signature and docstring but its own ``__dict__`` (decorators
    store their registration there), calling ``impl``."""
    source = inspect.signature(impl)
    params = ", ".join(
        p.name if p.default is inspect.Parameter.empty else f"{p.name}={p.default!r}"
        for p in source.parameters.values()
    )
    call = ", ".join(source.parameters)
    namespace: dict[str, Any] = {"_impl": impl}
    exec(f"def {name}({params}):\n    return _impl({call})\n", namespace)
    fn = namespace[name]
    fn.__doc__ = impl.__doc__
    fn.__module__ = __name__
    assert isinstance(fn, types.FunctionType)
    return fn


def _register_desktop() -> None:
    """On Windows desktop Excel (or a server process with XLWINGS_ON_SERVER=true) xw.func registers; on other
    platforms it is a no-op and the plain functions above stay as they are."""
    try:
        import xlwings as xw
    except Exception:  # pragma: no cover - xlwings is a dependency
        return
    if getattr(xw.func, "__module__", "").startswith("xlwings.__init__") or xw.func.__module__ == "xlwings":
        return  # the no-op decorators of platforms without UDF support
    globals().update(build(xw.func, xw.arg, xw.ret))


_register_desktop()
