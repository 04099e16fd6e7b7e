"""Array backends: the same evaluator code runs on numpy (check, recalc, step, fit's RMSE) and on torch (solve).

Only the numbers of a value go through the backend; the kinds of values (blank, number, boolean, text, error) stay
numpy arrays in both, so torch never sees strings and the numpy pass never imports torch. The numpy backend also
tracks the errors that arithmetic makes (``#DIV/0!``, ``#NUM!``) as Excel does; the torch backend lets them become
NaN instead (no device-to-host synchronisation in the differentiable pass) and keeps gradients finite where a branch
that is not taken would divide by zero.
"""

from __future__ import annotations

import numpy as np

from xlcf.errors import ConfigError


class NumpyBackend:
    """numpy float64 arrays."""

    name = "numpy"
    flavor = "excel"  # "libreoffice" on the instance that computes LibreOffice's values for comparison
    tracks_errors = True
    differentiable = False

    def __init__(self, dtype=np.float64):
        self.dtype = np.dtype(dtype)

    # conversions
    def asnum(self, a):
        return np.asarray(a, dtype=self.dtype)

    def to_numpy(self, x) -> np.ndarray:
        return np.asarray(x)

    def is_num(self, x) -> bool:
        return isinstance(x, np.ndarray)

    def index(self, idx: np.ndarray):
        return idx

    def mask(self, m: np.ndarray):
        return m

    # element-wise
    def where(self, cond, a, b):
        return np.where(cond, a, b)

    def tofloat(self, x):
        return np.asarray(x, dtype=self.dtype)

    sqrt = staticmethod(np.sqrt)
    exp = staticmethod(np.exp)
    log = staticmethod(np.log)
    log10 = staticmethod(np.log10)
    abs = staticmethod(np.abs)
    sign = staticmethod(np.sign)
    floor = staticmethod(np.floor)
    ceil = staticmethod(np.ceil)
    isfinite = staticmethod(np.isfinite)
    isnan = staticmethod(np.isnan)
    minimum = staticmethod(np.minimum)
    maximum = staticmethod(np.maximum)

    def power(self, a, b):
        return np.power(a, b)

    def fn(self, name: str):
        """An element-wise function that numpy and torch both name ``name`` (sin, cos, tanh, ...)."""
        return getattr(np, name)

    def safe_div(self, a, b):
        return a / b

    def safe_sqrt(self, x):
        return np.sqrt(x)

    def safe_log(self, x, log=None):
        return (log or np.log)(x)

    def safe_power(self, a, b):
        return np.power(a, b)

    def round_half_away(self, x, digits):
        scale = np.power(10.0, digits)
        return np.sign(x) * np.floor(np.abs(x) * scale + 0.5) / scale

    # shapes and reductions
    def sum(self, x, axis):
        return np.sum(x, axis=axis, keepdims=True)

    def amax(self, x, axis):
        return np.max(x, axis=axis, keepdims=True)

    def amin(self, x, axis):
        return np.min(x, axis=axis, keepdims=True)

    def matmul(self, a, b):
        return np.matmul(a, b)

    def broadcast_to(self, x, shape):
        return np.broadcast_to(x, shape)

    def reshape(self, x, shape):
        return np.reshape(x, shape)

    def transpose12(self, x):
        return np.swapaxes(x, 1, 2)

    def concat(self, xs, axis):
        return np.concatenate(xs, axis=axis)

    def take(self, flat, idx):
        return flat[idx]

    def put(self, flat, idx, values):
        """``flat`` with ``values`` at ``idx`` (numpy: in place, since nothing records the old value)."""
        flat[idx] = values
        return flat

    def copy(self, x):
        return np.array(x, copy=True)

    def full(self, shape, value):
        return np.full(shape, value, dtype=self.dtype)

    def uniform(self, shape, rng: np.random.Generator):
        return rng.random(shape)


NUMPY = NumpyBackend()


def get_backend(name: str = "numpy", device=None, dtype=None):
    """``"numpy"`` or ``"torch"`` (imports torch only then)."""
    if name == "numpy":
        return NUMPY if dtype is None else NumpyBackend(dtype)
    if name == "torch":
        from xlcf.formula.torch_backend import TorchBackend

        return TorchBackend(device=device, dtype=dtype)
    raise ConfigError(f"unknown evaluator backend {name!r} (expected numpy or torch)", field="backend")
