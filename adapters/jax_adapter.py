"""JAX / optax as an exec subject: `losscheck fuzz --exec 'python3 adapters/jax_adapter.py'`.

Wraps optax's loss functions as a JAX user calls them, under `jax.jit` on the CPU, in the
case's dtype (f32, f16, bf16; JAX computes in the input dtype, so no f32 output for 16-bit
inputs is declared). Gradients come from `jax.vjp` with the cotangent (ones when absent).
Shapes are bucketed so `jit` does not recompile per case: elementwise inputs are flattened and
padded to a power of two, row-wise ones have their rows padded; padded rows are cut out with
`jnp.where` before the reduction (eager op-by-op execution compiles every primitive for every
new shape, which is slower still and grows without bound in memory).

Declared honestly, by what optax has:

| loss | optax | notes |
|---|---|---|
| mse | `squared_error(pred, target)` | |
| huber | `huber_loss(pred, target, delta)` | |
| log_cosh | `log_cosh(pred, target)` | |
| bce_logits | `sigmoid_binary_cross_entropy(logit, target)` | no pos_weight |
| hinge | `hinge_loss(score, target)` | margin 1 only |
| focal | `sigmoid_focal_loss(logit, target, alpha, gamma)` | |
| cross_entropy | `softmax_cross_entropy_with_integer_labels` / `softmax_cross_entropy` (soft) | [N,C] only; rows with target = ignore_index are `unsupported` (optax has no ignore_index) |
| kl_div | `kl_divergence(log q, p)` / `kl_divergence_with_log_targets` | rows; `mean` over rows (batchmean) |

The reductions are what a JAX user writes: `jnp.mean` / `jnp.sum` of optax's unreduced
output (a mean over the valid rows, computed as their sum / their count). No weights or masks are declared (optax takes none), so only unweighted, unmasked cases
are sent. mae, bce and quantile have no optax function and are not declared.

Options: `--platform cpu|gpu` (default cpu).
"""

import argparse
import os
import sys

ap = argparse.ArgumentParser()
ap.add_argument("--platform", default="cpu")
args = ap.parse_args()
os.environ.setdefault("JAX_PLATFORMS", args.platform)

sys.dont_write_bytecode = True  # keep adapters/ free of __pycache__
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from losscheck_adapter import Subject, Unsupported  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

DT = {"f32": jnp.float32, "f16": jnp.float16, "bf16": jnp.bfloat16}

subject = Subject("jax %s, optax %s (%s, eager)" % (jax.__version__, optax.__version__, args.platform))


def bucket(n):
    """Sizes are padded to powers of two so that `jit` compiles once per bucket, not per case."""
    b = 1
    while b < n:
        b *= 2
    return b


def host(req, name, rows=None):
    """An input as a numpy array, flattened (elementwise) or with its rows padded."""
    t = req.inputs[name]
    if t.get("dtype") == "i64":
        x = np.array(req.ints(name), dtype=np.int32)
    else:
        x = np.array(req.floats(name), dtype=np.float64).astype(DT[req.dtype])  # exact
    return x.reshape(tuple(t["shape"]))


def pad(x, n):
    """Pad the leading axis of x to n with zeros."""
    if x.shape[0] == n:
        return x
    widths = [(0, n - x.shape[0])] + [(0, 0)] * (x.ndim - 1)
    return np.pad(x, widths)


def floats(x):
    return np.asarray(x, dtype=np.float64).ravel().tolist()


_jitted = {}  # (loss, reduction, dtype, static) -> jitted function


def compiled(key, fn, red):
    """jit of: (diff arrays, other arrays, valid mask, n, cotangent, params) -> value, grads.

    The unreduced loss is fn(*diff, *others, params) on padded rows; padded rows are cut out
    with jnp.where (no gradient flows to them); `sum` and `mean` are jnp.sum and sum / n over the
    valid rows — jnp.mean of the unpadded array (n = 0 gives 0/0 = NaN, as jnp.mean does)."""
    if key in _jitted:
        return _jitted[key]

    def run(diff, others, valid, n, cot, params):
        def f(*d):
            out = fn(*d, *others, params)
            shape = (-1,) + (1,) * (out.ndim - 1)
            out = jnp.where(valid.reshape(shape), out, jnp.zeros_like(out))
            if red == "mean":
                return jnp.sum(out) / n.astype(out.dtype)
            if red == "sum":
                return jnp.sum(out)
            return out

        value, vjp = jax.vjp(f, *diff)
        return value, vjp(cot.astype(value.dtype))

    _jitted[key] = jax.jit(run)
    return _jitted[key]


def evaluate(req, fn, diff, rest, params, rowwise=False, static=()):
    """Run optax's fn on the case: elementwise inputs flattened, rows padded to a bucket."""
    red = req.reduction
    xs = {n: host(req, n) for n in diff + rest}
    shape0 = xs[diff[0]].shape
    if rowwise:
        rows = shape0[0]
        flat = xs
    else:
        rows = int(np.prod(shape0)) if len(shape0) else 1
        flat = {k: v.reshape(-1) for k, v in xs.items()}
    b = bucket(rows)
    padded = {k: pad(v, b) for k, v in flat.items()}
    valid = np.arange(b) < rows
    out_dtype = DT[req.dtype]
    if req.has("cotangent"):
        c = host(req, "cotangent").reshape(-1)
        cot = pad(c, b) if red == "none" else c.reshape(())
    else:
        cot = np.ones(b if red == "none" else (), dtype=out_dtype)
    key = (req.loss, red, req.dtype, tuple(sorted(static)))
    run = compiled(key, fn, red)
    value, grads = run(tuple(jnp.asarray(padded[k]) for k in diff),
                       tuple(jnp.asarray(padded[k]) for k in rest),
                       jnp.asarray(valid), jnp.asarray(rows, dtype=jnp.int32), jnp.asarray(cot),
                       {k: jnp.asarray(v, dtype=jnp.float32) for k, v in params.items()})
    value = np.asarray(value)
    if red == "none":
        value = value[:rows].reshape(shape0[:1] if rowwise else shape0)
        vshape = list(value.shape)
    else:
        vshape = []
    g = {}
    for name, gr in zip(diff, grads):
        if name in req.grad:
            gr = np.asarray(gr)[:rows]
            g[name] = floats(gr.reshape(xs[name].shape))
    return req.result(floats(value), value_shape=vshape, grad=g)


def elementwise(loss, fn, params=(), grad_inputs=("pred", "target"), labels=(), static=None):
    decl = dict(dtypes=list(DT), reductions=["none", "sum", "mean"],
                params={p: "any" for p in params}, inputs=["cotangent"], grad=True)

    @subject.loss(loss, **decl)
    def handler(req):
        ps = {p: req.param(p) for p in params if req.param(p) is not None}
        st = static(req) if static else ()
        return evaluate(req, fn(st) if static else fn, list(grad_inputs), list(labels), ps, static=st)
    return handler


elementwise("mse", lambda p, t, ps: optax.squared_error(p, t))
elementwise("huber", lambda p, t, ps: optax.huber_loss(p, t, delta=ps["delta"].astype(p.dtype)),
            params=["delta"])
elementwise("log_cosh", lambda p, t, ps: optax.log_cosh(p, t))
elementwise("bce_logits", lambda z, t, ps: optax.sigmoid_binary_cross_entropy(z, t),
            grad_inputs=["logit"], labels=["target"])
elementwise("hinge", lambda s, t, ps: optax.hinge_loss(s, t.astype(s.dtype)),
            grad_inputs=["score"], labels=["target"])


def focal_fn(static):
    has_alpha = static[0]

    def f(z, t, ps):
        alpha = ps["alpha"].astype(z.dtype) if has_alpha else None
        return optax.sigmoid_focal_loss(z, t, alpha=alpha, gamma=ps["gamma"].astype(z.dtype))
    return f


elementwise("focal", focal_fn, params=["alpha", "gamma"], grad_inputs=["logit"], labels=["target"],
            static=lambda req: (req.param("alpha") is not None,))


@subject.loss("cross_entropy", dtypes=list(DT), reductions=["none", "sum", "mean"],
              inputs=["cotangent"], shapes=["NC", "soft"], grad=True)
def cross_entropy(req):
    if req.inputs["target"].get("dtype") == "i64":
        ig = req.param("ignore_index", -100)
        if any(t == ig for t in req.ints("target")):
            raise Unsupported("optax has no ignore_index")
        fn = lambda z, t, ps: optax.softmax_cross_entropy_with_integer_labels(z, t)  # noqa: E731
        return evaluate(req, fn, ["logits"], ["target"], {}, rowwise=True, static=("ids",))
    fn = lambda z, t, ps: optax.softmax_cross_entropy(z, t)  # noqa: E731
    return evaluate(req, fn, ["logits"], ["target"], {}, rowwise=True, static=("soft",))


@subject.loss("kl_div", dtypes=list(DT), reductions=["none", "sum", "mean"],
              params={"log_target": "any"}, inputs=["cotangent"], grad=True)
def kl_div(req):
    lt = bool(req.param("log_target", False))
    opt = optax.kl_divergence_with_log_targets if lt else optax.kl_divergence
    return evaluate(req, lambda q, p, ps: opt(q, p), ["input"], ["target"], {}, rowwise=True,
                    static=("log" if lt else "p",))


if __name__ == "__main__":
    subject.serve()
