"""losscheck exec-protocol helper (PROTOCOL.md, version 1) — standard library only.

Wrap a loss implementation in a few lines and fuzz it with `losscheck fuzz --exec`:

    from losscheck_adapter import Subject, Unsupported

    subject = Subject("my-mse")

    @subject.loss("mse", dtypes=["f32"], reductions=["none", "sum", "mean"],
                  inputs=["weight", "mask"], grad=True)
    def mse(req):
        pred, target = req.floats("pred"), req.floats("target")
        ...                                     # compute with your library
        return req.result(value=..., grad={"pred": [...], "target": [...]})

    if __name__ == "__main__":
        subject.serve()

then `losscheck fuzz --exec 'python3 my_mse.py'`.

What the helper does:
- moves the protocol to private file descriptors: the original stdout is dup()ed for the
  responses and fd 1 (and sys.stdout) point at stderr, so a library that prints (even from C)
  cannot corrupt the stream; stdin is dup()ed likewise and fd 0 points at /dev/null;
- answers the handshake from the declarations of `Subject.loss`;
- decodes tensors (numbers, and the strings "nan", "inf", "-inf") and encodes responses
  (shortest round-trip decimals, non-finite values as strings);
- rounds to f32 / f16 / bf16 exactly, without numpy (`round_to`, `round_fraction`,
  `round_ratio`);
- turns exceptions into error responses: `InvalidInput` -> "invalid_input", `Unsupported` ->
  "unsupported", anything else -> "internal" (the traceback goes to stderr).
"""

import json
import math
import os
import sys
import traceback

__all__ = [
    "Subject", "Request", "InvalidInput", "Unsupported", "FORMATS",
    "round_to", "round_fraction", "round_ratio", "decode", "encode", "is_value_of",
]

PROTOCOL = 1

# precision (significand bits incl. the implicit one), emin, emax
FORMATS = {"f32": (24, -126, 127), "f16": (11, -14, 15), "bf16": (8, -126, 127)}


class InvalidInput(Exception):
    """The case is invalid input (answered with kind "invalid_input")."""


class Unsupported(Exception):
    """The subject cannot do this combination (kind "unsupported"; coverage, not a finding)."""


def max_value(dtype):
    p, _, emax = FORMATS[dtype]
    return math.ldexp((1 << p) - 1, emax - p + 1)


def round_fraction(q, dtype):
    """The value of `dtype` nearest the rational `q` (ties to even, overflow to +-inf), as a
    Python float (every f32/f16/bf16 value is exact in float64)."""
    return round_ratio(q.numerator, q.denominator, dtype)


def round_ratio(num, den, dtype):
    """The value of `dtype` nearest num/den (integers, den > 0), ties to even, overflow to
    +-inf. Fast for the dyadic values of exact loss computations (no Fraction normalisation)."""
    p, emin, emax = FORMATS[dtype]
    if num == 0:
        return 0.0
    neg = num < 0
    n, d = (-num if neg else num), den
    e = n.bit_length() - d.bit_length()  # 2^(e-1) < n/d < 2^(e+1)
    if (n << max(0, -e)) < (d << max(0, e)):
        e -= 1
    # now 2^e <= n/d < 2^(e+1); quantum of the result
    qe = max(e, emin) - (p - 1)
    num2, den2 = (n, d << qe) if qe >= 0 else (n << -qe, d)
    m, rem = divmod(num2, den2)
    if 2 * rem > den2 or (2 * rem == den2 and m & 1):
        m += 1
    try:
        x = math.ldexp(m, qe)
    except OverflowError:
        x = math.inf
    if x > max_value(dtype):
        x = math.inf
    return -x if neg else x


def round_to(x, dtype):
    """Round a float to the nearest value of `dtype` (NaN and +-inf kept, -0.0 kept)."""
    if math.isnan(x) or math.isinf(x) or x == 0.0:
        return x
    n, d = x.as_integer_ratio()
    return round_ratio(n, d, dtype)


def is_value_of(x, dtype):
    return math.isnan(x) or round_to(x, dtype) == x


def decode(v):
    """A number as PROTOCOL.md writes it (a JSON number, or "nan" / "inf" / "-inf")."""
    if isinstance(v, str):
        s = v.lower()
        if s in ("nan", "-nan"):
            return math.nan
        if s in ("inf", "+inf", "infinity"):
            return math.inf
        if s in ("-inf", "-infinity"):
            return -math.inf
        raise InvalidInput("%r is not a number" % v)
    return float(v)


def encode(x):
    """A float as PROTOCOL.md writes it: shortest round-trip decimal, or a string."""
    if x != x:
        return "nan"
    if x == math.inf:
        return "inf"
    if x == -math.inf:
        return "-inf"
    return float(x)


class Request:
    """One eval request: `loss`, `dtype`, `out_dtype`, `params` (every param, `reduction`
    included), `inputs` (name -> {"dtype", "shape", "data"} as sent), `grad` (names)."""

    def __init__(self, msg):
        self.msg = msg
        self.id = msg.get("id", 0)
        self.loss = msg["loss"]
        self.dtype = msg["dtype"]
        self.out_dtype = msg.get("out_dtype", self.dtype)
        self.params = msg.get("params", {})
        self.inputs = msg.get("inputs", {})
        self.grad = msg.get("grad", [])

    @property
    def reduction(self):
        return self.params.get("reduction", "mean")

    def has(self, name):
        return name in self.inputs

    def shape(self, name):
        return list(self.inputs[name]["shape"])

    def floats(self, name):
        """The data of an input as Python floats (exact values of the dtype)."""
        return [decode(v) for v in self.inputs[name]["data"]]

    def ints(self, name):
        return [int(v) for v in self.inputs[name]["data"]]

    def param(self, name, default=None):
        v = self.params.get(name, default)
        if isinstance(v, str) and v.lower() in ("nan", "inf", "-inf", "+inf"):
            return decode(v)
        return v

    def result(self, value, value_shape=None, grad=None, grad_shapes=None):
        """A response: `value` a list (or a scalar) of floats in `out_dtype`, `grad` a dict
        name -> list of floats in `dtype` (shapes default: [] for a reduced value, the
        input's shape for a gradient)."""
        if not isinstance(value, (list, tuple)):
            value = [value]
        if value_shape is None:
            value_shape = [] if self.reduction != "none" else self.shape(self.grad_base())
        out = {"id": self.id, "value": {"shape": value_shape, "data": [encode(x) for x in value]}}
        g = {}
        for name, data in (grad or {}).items():
            shp = (grad_shapes or {}).get(name, self.shape(name))
            g[name] = {"shape": shp, "data": [encode(x) for x in data]}
        out["grad"] = g
        return out

    def grad_base(self):
        # the first required float input: its shape is the elementwise output shape
        for k in self.inputs:
            if k not in ("weight", "mask", "cotangent", "pos_weight", "class_weight"):
                return k
        return next(iter(self.inputs))


class Subject:
    """A set of declared losses and the protocol loop."""

    def __init__(self, name):
        self.name = name
        self.losses = {}
        self.handlers = {}

    def loss(self, loss_id, dtypes=("f32",), out_dtypes=(), reductions=("mean",), params=None,
             inputs=(), shapes=None, grad=False):
        """Declare a loss (PROTOCOL.md's capabilities) and register its handler, a function
        Request -> response dict (see Request.result). `params`: name -> "any" or a list of
        the only values supported; undeclared params are sent at their defaults."""
        decl = {"dtypes": list(dtypes), "out_dtypes": list(out_dtypes),
                "reductions": list(reductions), "params": dict(params or {}),
                "inputs": list(inputs), "grad": bool(grad)}
        if shapes is not None:
            decl["shapes"] = list(shapes)

        def register(fn):
            self.losses[loss_id] = decl
            self.handlers[loss_id] = fn
            return fn
        return register

    def hello(self):
        return {"protocol": PROTOCOL, "name": self.name, "losses": self.losses}

    def handle(self, msg):
        op = msg.get("op", "eval")
        if op == "hello":
            return self.hello()
        rid = msg.get("id", 0)
        if op != "eval":
            return {"id": rid, "error": "unknown op %r" % op, "kind": "invalid_input"}
        try:
            req = Request(msg)
            fn = self.handlers.get(req.loss)
            if fn is None:
                raise Unsupported("%s does not implement %s" % (self.name, req.loss))
            return fn(req)
        except InvalidInput as e:
            return {"id": rid, "error": str(e), "kind": "invalid_input"}
        except Unsupported as e:
            return {"id": rid, "error": str(e), "kind": "unsupported"}
        except Exception as e:  # noqa: BLE001 - every failure is reported, never fatal
            traceback.print_exc(file=sys.stderr)
            return {"id": rid, "error": "%s: %s" % (type(e).__name__, e), "kind": "internal"}

    def serve(self):
        """Run the protocol loop until stdin closes."""
        out, inp = private_streams()
        for line in inp:
            line = line.strip()
            if not line:
                continue
            try:
                msg = json.loads(line)
            except ValueError as e:
                reply = {"id": None, "error": "not JSON: %s" % e, "kind": "invalid_input"}
            else:
                reply = self.handle(msg)
            out.write(json.dumps(reply, allow_nan=False, separators=(",", ":")))
            out.write("\n")
            out.flush()


def private_streams():
    """Move the protocol to private descriptors: returns (out, in) text streams on dup()s of the
    original stdout and stdin; fd 1 and sys.stdout then go to stderr, fd 0 reads /dev/null."""
    sys.stdout.flush()
    out_fd = os.dup(1)
    in_fd = os.dup(0)
    os.dup2(2, 1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    sys.stdout = sys.stderr
    out = os.fdopen(out_fd, "w", encoding="utf-8", newline="\n")
    inp = os.fdopen(in_fd, "r", encoding="utf-8")
    return out, inp
