"""An exactly correct exec subject, in pure Python, for mse, mae, huber and quantile.

Every value and gradient is computed exactly on the exact inputs — every quantity is dyadic
(m·2^e with Python integers) until the one division of a mean, done in the final rounding — in
extended reals where an input is infinite, and rounded once to the output dtype, following
DESIGN.md's policies (mean = sum / Σ mask·weight, the empty mean is 0, masked and zero-weight
positions contribute nothing, termwise gradients, an exact zero factor wins over an infinite
one, the Clarke selection 0 at a kink). `losscheck fuzz --exec 'python3
adapters/examples/exact_mse.py'` must report no findings. It is also the reference for
`broken.py`.
"""

import math
import os
import sys

sys.dont_write_bytecode = True  # keep adapters/ free of __pycache__
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from losscheck_adapter import Subject, round_ratio  # noqa: E402

NAN = float("nan")
INF = float("inf")


class X:
    """An extended real: m·2^e (Python ints), +-inf, or NaN."""
    __slots__ = ("m", "e", "inf", "nan")

    def __init__(self, m=0, e=0, inf=0, nan=False):
        self.m, self.e, self.inf, self.nan = m, e, inf, nan

    @staticmethod
    def of(x):
        if x != x:
            return X(nan=True)
        if math.isinf(x):
            return X(inf=1 if x > 0 else -1)
        n, d = float(x).as_integer_ratio()  # d is a power of two
        return X(n, 1 - d.bit_length())

    def is_zero(self):
        return not self.nan and self.inf == 0 and self.m == 0

    def sign(self):
        if self.inf:
            return self.inf
        return (self.m > 0) - (self.m < 0)

    def __neg__(self):
        return X(-self.m, self.e, -self.inf, self.nan)

    def __add__(self, o):
        if self.nan or o.nan or (self.inf and o.inf and self.inf != o.inf):
            return X(nan=True)
        if self.inf or o.inf:
            return X(inf=self.inf or o.inf)
        if self.e >= o.e:
            return X((self.m << (self.e - o.e)) + o.m, o.e)
        return X(self.m + (o.m << (o.e - self.e)), self.e)

    def __sub__(self, o):
        return self + (-o)

    def __mul__(self, o):
        if self.nan or o.nan:
            return X(nan=True)
        if self.inf or o.inf:
            s = self.sign() * o.sign()
            return X(nan=True) if s == 0 else X(inf=s)
        return X(self.m * o.m, self.e + o.e)

    def half(self):
        return X(self.m, self.e - 1, self.inf, self.nan)

    def le(self, o):
        """self <= o, both finite."""
        return (self - o).m <= 0

    def abs(self):
        return X(abs(self.m), self.e, abs(self.inf), self.nan)

    def round(self, dtype, den=None):
        """RN(self / den) in dtype; den a positive finite X (None: 1)."""
        if self.nan:
            return NAN
        if self.inf:
            return INF if self.inf > 0 else -INF
        num, e = self.m, self.e
        d = 1
        if den is not None:
            d, e = den.m, e - den.e
        if e >= 0:
            return round_ratio(num << e, d, dtype)
        return round_ratio(num, d << -e, dtype)


ONE = X(1, 0)
ZERO = X(0, 0)


def per_element(loss, r, req):
    """(l(r), dl/dpred) for r = pred - target; dl/dtarget = -dl/dpred."""
    if r.nan:
        return X(nan=True), X(nan=True)
    if loss == "mse":
        return r * r, X(2, 0) * r
    if loss == "mae":
        return r.abs(), X(r.sign(), 0)
    if loss == "huber":
        d = X.of(req.param("delta", 1.0))
        a = r.abs()
        if not a.inf and a.le(d):
            return (r * r).half(), r
        return d * (a - d.half()), d * X(r.sign(), 0)
    if loss == "quantile":
        tau = X.of(req.param("tau", 0.5))
        u = -r
        s = u.sign()
        if s > 0:
            return tau * u, -tau
        if s < 0:
            return (tau - ONE) * u, ONE - tau
        return ZERO, ZERO
    raise ValueError(loss)


def evaluate(req):
    pred, target = req.floats("pred"), req.floats("target")
    n = len(pred)
    w = req.floats("weight") if req.has("weight") else None
    m = req.ints("mask") if req.has("mask") else None
    red = req.reduction
    cot = req.floats("cotangent") if req.has("cotangent") else None
    active = [(m is None or m[i] != 0) and (w is None or w[i] != 0.0) for i in range(n)]
    wx = [X.of(w[i]) if w is not None else ONE for i in range(n)]
    terms, derivs = [None] * n, [None] * n
    for i in range(n):
        if active[i]:
            r = X.of(pred[i]) - X.of(target[i])
            l, dl = per_element(req.loss, r, req)
            terms[i], derivs[i] = wx[i] * l, dl
    denom = None
    empty = False
    if red == "mean":
        denom = ZERO
        for i in range(n):
            if active[i]:
                denom = denom + wx[i]
        empty = denom.m == 0
    out = req.out_dtype
    if red == "none":
        value = [terms[i].round(out) if active[i] else 0.0 for i in range(n)]
    elif empty:
        value = [0.0]
    else:
        s = ZERO
        for i in range(n):
            if active[i]:
                s = s + terms[i]
        value = [s.round(out, denom)]
    grads = {}
    for g in req.grad:
        sign = 1 if g == "pred" else -1
        data = []
        for i in range(n):
            if not active[i] or empty:
                data.append(0.0)
                continue
            c = X.of(cot[i] if red == "none" else cot[0]) if cot is not None else ONE
            dl = derivs[i]
            if dl.is_zero() or c.is_zero():
                data.append(0.0)
                continue
            gi = dl * wx[i] * c
            data.append((gi if sign > 0 else -gi).round(req.dtype, denom))
        grads[g] = data
    return req.result(value, grad=grads)


subject = Subject("exact-python")
for _loss, _params in [("mse", {}), ("mae", {}), ("huber", {"delta": "any"}), ("quantile", {"tau": "any"})]:
    subject.loss(_loss, dtypes=["f32", "f16", "bf16"], out_dtypes=["f32"],
                 reductions=["none", "sum", "mean"], params=_params,
                 inputs=["weight", "mask", "cotangent"], grad=True)(evaluate)

if __name__ == "__main__":
    subject.serve()
