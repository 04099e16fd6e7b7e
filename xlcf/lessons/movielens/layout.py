"""Layout of the ``movielens`` workbook: the settings and metrics cells of the ``movielens`` sheet, where each
output sheet puts its tables, the embeddings sheet's columns for k factors, and the blocks a training writes
(:class:`MovielensOutputs`). Shared by the generator (:mod:`.build`) and the actions that fill a book."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from xlcf import catalog

D = catalog.MOVIELENS_BOOK_DEFAULTS
SHEET = "movielens"
OUTPUT_SHEETS = ("history", "movie_bias", "movie_pca", "recommend", "pred_vs_actual", "crosstab", "embeddings")
MAX_ROWS = 1_048_576
MAX_COLS = 16_384
MAX_FACTORS = 4000  # the embeddings sheet needs 4*k + 50 columns (Excel: 16,384)
MAX_EPOCHS = 1_000_000  # one history row per epoch (Excel: 1,048,576 rows)
TOP_N_BIAS = 15
TOP_N_PCA = 10
TOP_N_RECOMMEND = 10
N_COMPONENTS = 3
CROSSTAB_TOP = 15
LONG_CAPACITY = CROSSTAB_TOP * CROSSTAB_TOP  # every (user, movie) pair of the 15x15 fits

# ------------------------------------------------------------------------------------------------------------
# Layout of the movielens sheet (column B = settings, column E = metrics)


@dataclass(frozen=True)
class Setting:
    name: str  # sheet-scoped defined name and key in the settings dict
    label: str
    default: Any
    help: str
    number_format: str = "General"


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "ratings_source",
        "ratings source",
        "ml-latest-small",
        "ratings.csv, a folder holding one, a GroupLens zip (relative to this workbook's folder), "
        "or the name ml-latest-small",
    ),
    Setting("model", "model", D["model"], " | ".join(catalog.MODELS)),
    Setting("optimizer", "optimizer", D["optimizer"], " | ".join(catalog.optimizer_names())),
    Setting("epochs", "epochs", None, "blank = the optimizer's default", "0"),
    Setting("lr", "learning rate", None, "blank = the optimizer's default", "0.0000"),
    Setting("wd", "weight decay", None, "blank = the model's default", "0.0000"),
    Setting(
        "factors",
        "factors",
        D["factors"],
        "embedding size k (1 to 4000); blank = the optimizer's default (32 for gibbs, 50 for the others)",
        "0",
    ),
    Setting("valid_pct", "validation %", D["valid_pct"], "share of ratings held out, in (0, 90%]", "0%"),
    Setting("seed", "seed", D["seed"], "split and initialisation seed", "0"),
    Setting("device", "device", D["device"], catalog.DEVICE_HELP),
    Setting("user_id", "user id to recommend for", 1, "a userId of the ratings", "0"),
    Setting("hidden", "nn hidden size", D["hidden"], "nn model only", "0"),
    Setting("dropout_emb", "nn dropout (embeddings)", D["dropout"][0], "nn model only, in [0, 1)", "0.00"),
    Setting("dropout_hidden", "nn dropout (hidden)", D["dropout"][1], "nn model only, in [0, 1)", "0.00"),
    Setting("min_ratings", "min ratings N", 20, "bias lists and PCA use movies with >= N training ratings", "0"),
)
SETTINGS_TOP = 5
SETTING_REF = {s.name: f"B{SETTINGS_TOP + i}" for i, s in enumerate(SETTINGS)}
STATUS_REF = f"B{SETTINGS_TOP + len(SETTINGS) + 1}"

METRICS: tuple[tuple[str, str, str], ...] = (
    ("train_rmse", "train RMSE", "0.0000"),
    ("valid_rmse", "valid RMSE", "0.0000"),
    ("epochs_run", "epochs run", "0"),
    ("fit_seconds", "fit seconds", "0.00"),
    ("device_used", "device", "General"),
    ("model_used", "model", "General"),
    ("optimizer_used", "optimizer", "General"),
    ("lr_used", "learning rate (last epoch)", "0.0E+00"),
    ("n_ratings", "ratings", "#,##0"),
    ("n_users", "users", "#,##0"),
    ("n_movies", "movies", "#,##0"),
    ("n_train", "training ratings", "#,##0"),
    ("n_valid", "validation ratings", "#,##0"),
    ("trained_at", "trained at (UTC)", "General"),
)
METRICS_TOP = 5
METRIC_REF = {name: f"E{METRICS_TOP + i}" for i, (name, _, _) in enumerate(METRICS)}

# history
HISTORY_HEADER_ROW = 3
HISTORY_TOP = 4
HISTORY_COUNT_REF = "H2"  # how many history rows the last run wrote (so the next one can clear the rest)
HISTORY_COLUMNS = ("epoch", "train loss", "train RMSE", "valid RMSE", "seconds")
DEFAULT_HISTORY_ROWS = 10

# movie_bias
BIAS_TOP = 7
BIAS_COLUMNS = ("rank", "movieId", "title", "bias", "ratings", "mean rating")

# movie_pca
PCA_VAR_TOP = 5
PCA_BLOCK_STEP = 5  # columns per component block
PCA_HIGH_TOP = 12
PCA_LOW_TOP = 25

# recommend
REC_TOP = 7  # table A7:F16 under the user's summary (A2:B4)
# "±": the prediction's posterior predictive std (a Bayesian fit, optimizer gibbs; blank for the others)
REC_COLUMNS = ("rank", "movieId", "title", "predicted", "±", "ratings")

# pred_vs_actual
PVA_TOP = 6  # rows 6..15: actual 0.5 .. 5.0
HALF_STARS = [0.5 * i for i in range(1, 11)]

# crosstab
CT_TOP = 6
CT_PRED_COL = 18  # column R: ids, S.. predictions
CT_TITLES_TOP = 26

# embeddings
EMB_FACTORS_REF = "B3"  # k the sheet is laid out for
EMB_ROWS_REF = "D3"  # long-table rows it is laid out for (= rated cells of the 15x15)
EMB_USER_TOP = 6  # rows 6..20
EMB_MOVIE_TOP = 24  # rows 24..38
EMB_LONG_HEADER = 41
EMB_LONG_TOP = 42


@dataclass(frozen=True)
class EmbeddingsLayout:
    """Positions on the embeddings sheet for ``k`` factors and ``rows`` long-table rows (1-based numbers)."""

    k: int
    rows: int = LONG_CAPACITY

    @property
    def uvec(self) -> int:  # user vector looked up with INDEX/MATCH
        return 6

    @property
    def mvec(self) -> int:
        return self.uvec + self.k + 1

    @property
    def dot_lookup(self) -> int:
        return self.mvec + self.k + 1

    @property
    def uhot(self) -> int:  # user one-hot (15 columns)
        return self.dot_lookup + 2

    @property
    def mhot(self) -> int:
        return self.uhot + CROSSTAB_TOP + 1

    @property
    def umm(self) -> int:  # MMULT(user one-hot, user embedding matrix)
        return self.mhot + CROSSTAB_TOP + 1

    @property
    def mmm(self) -> int:
        return self.umm + self.k + 1

    @property
    def dot_hot(self) -> int:
        return self.mmm + self.k + 1

    @property
    def diff(self) -> int:
        return self.dot_hot + 1

    @property
    def last_row(self) -> int:
        return EMB_LONG_TOP + max(self.rows, 1) - 1


# ------------------------------------------------------------------------------------------------------------
# Outputs (pure)


Value = float | int | str | bool | None


@dataclass
class MovielensOutputs:
    """Everything a training writes. ``blocks[sheet] = [(top_left, rows)]``; values finite or None."""

    blocks: dict[str, list[tuple[str, list[list[Value]]]]]
    history_rows: int
    factors: int
    embedding_rows: int
    status: str
    summary: dict[str, Any] = field(default_factory=dict)
