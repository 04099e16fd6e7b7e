"""The torch backend of the evaluator (imported only by the differentiable pass, never by check/recalc)."""

from __future__ import annotations

import numpy as np
import torch


class TorchBackend:
    """torch tensors on one device. Arithmetic that Excel turns into an error gives NaN here, computed so that the
    gradient stays finite (0) through a branch that an IF does not take."""

    name = "torch"
    tracks_errors = False
    differentiable = True

    def __init__(self, device=None, dtype=None):
        self.device = torch.device(device or "cpu")
        self.dtype = dtype or torch.float64
        self._nan = None

    # conversions
    def asnum(self, a):
        if isinstance(a, torch.Tensor):
            return a.to(device=self.device, dtype=self.dtype)
        return torch.as_tensor(np.asarray(a, dtype=np.float64), dtype=self.dtype, device=self.device)

    def to_numpy(self, x) -> np.ndarray:
        if isinstance(x, torch.Tensor):
            return x.detach().cpu().numpy()
        return np.asarray(x)

    def is_num(self, x) -> bool:
        return isinstance(x, torch.Tensor)

    def index(self, idx: np.ndarray):
        return torch.as_tensor(np.array(idx, dtype=np.int64, copy=True), device=self.device)

    def mask(self, m):
        if isinstance(m, torch.Tensor):
            return m
        return torch.as_tensor(np.asarray(m, dtype=bool), device=self.device)

    # element-wise
    def where(self, cond, a, b):
        cond = self.mask(cond)
        if not isinstance(a, (torch.Tensor, float, int)):
            a = torch.as_tensor(a, dtype=self.dtype, device=self.device)
        if not isinstance(b, (torch.Tensor, float, int)):
            b = torch.as_tensor(b, dtype=self.dtype, device=self.device)
        if not isinstance(a, torch.Tensor) and not isinstance(b, torch.Tensor):
            a = torch.as_tensor(a, dtype=self.dtype, device=self.device)
        return torch.where(cond, a, b)

    def tofloat(self, x):
        if isinstance(x, torch.Tensor):
            return x.to(self.dtype)
        return self.asnum(x)

    sqrt = staticmethod(torch.sqrt)
    exp = staticmethod(torch.exp)
    log = staticmethod(torch.log)
    log10 = staticmethod(torch.log10)
    abs = staticmethod(torch.abs)
    sign = staticmethod(torch.sign)
    floor = staticmethod(torch.floor)
    ceil = staticmethod(torch.ceil)
    isfinite = staticmethod(torch.isfinite)
    isnan = staticmethod(torch.isnan)

    def minimum(self, a, b):
        return torch.minimum(self.tofloat(a), self.tofloat(b))

    def maximum(self, a, b):
        return torch.maximum(self.tofloat(a), self.tofloat(b))

    def nan(self):
        return torch.tensor(float("nan"), dtype=self.dtype, device=self.device)

    def power(self, a, b):
        return torch.pow(a, b)

    def fn(self, name: str):
        return getattr(torch, name)

    def safe_div(self, a, b):
        if not isinstance(b, torch.Tensor):
            return a / b
        zero = b == 0
        return torch.where(zero, self.nan(), a / torch.where(zero, torch.ones_like(b), b))

    def safe_sqrt(self, x):
        bad = x < 0
        return torch.where(bad, self.nan(), torch.sqrt(torch.where(bad, torch.ones_like(x), x)))

    def safe_log(self, x, log=None):
        bad = x <= 0
        return torch.where(bad, self.nan(), (log or torch.log)(torch.where(bad, torch.ones_like(x), x)))

    def safe_power(self, a, b):
        a = self.tofloat(a)
        b = self.tofloat(b)
        frac = b != torch.floor(b)
        bad = ((a < 0) & frac) | ((a == 0) & (b <= 0))
        return torch.where(bad, self.nan(), torch.pow(torch.where(bad, torch.ones_like(a), a), b))

    def round_half_away(self, x, digits):
        scale = torch.pow(torch.tensor(10.0, dtype=self.dtype, device=self.device), self.tofloat(digits))
        # rounding is flat almost everywhere: no gradient, as Excel's Solver sees it through finite differences
        return (torch.sign(x) * torch.floor(torch.abs(x) * scale + 0.5) / scale).detach()

    # shapes and reductions
    def sum(self, x, axis):
        return torch.sum(x, dim=axis, keepdim=True)

    def amax(self, x, axis):
        return torch.amax(x, dim=axis, keepdim=True)

    def amin(self, x, axis):
        return torch.amin(x, dim=axis, keepdim=True)

    def matmul(self, a, b):
        return torch.matmul(a, b)

    def broadcast_to(self, x, shape):
        return torch.broadcast_to(x, shape)

    def reshape(self, x, shape):
        return torch.reshape(x, shape)

    def transpose12(self, x):
        return torch.transpose(x, 1, 2)

    def concat(self, xs, axis):
        return torch.cat([self.tofloat(x) for x in xs], dim=axis)

    def take(self, flat, idx):
        # index_select on a flat index is several times faster than advanced indexing (forward and backward)
        return torch.index_select(flat, 0, idx.reshape(-1)).reshape(idx.shape)

    def put(self, flat, idx, values):
        """A new tensor: ``flat`` with ``values`` at ``idx`` (out of place, so autograd keeps every version)."""
        return flat.index_put((idx,), values.to(flat.dtype))

    def copy(self, x):
        return x.clone()

    def full(self, shape, value):
        return torch.full(shape, value, dtype=self.dtype, device=self.device)

    def uniform(self, shape, rng: np.random.Generator):
        return self.asnum(rng.random(shape))
