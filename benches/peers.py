#!/usr/bin/env python3
"""Times the losscheck bench shapes in PyTorch and JAX/optax on CPU (forward + backward, the
same distributions, --threads T threads (default 1) like the losscheck kernel it is compared
with), median of 5 after 2 warm-up calls, and writes one table of ratios next to criterion's
output: <criterion dir>/peers.md (T = 1) or peers-tT.md.

losscheck's medians are read from criterion's estimates
(<criterion dir>/<group>/kernel/new/estimates.json), so run the Rust benches first:

    nice -n 10 cargo bench --bench multiclass --bench elementwise --bench rows -- \
        --warm-up-time 1 --measurement-time 3
    nice -n 10 /work/venv/bin/python benches/peers.py [--threads 1] [--only cross_entropy]

A peer that is not installed is skipped with a message. Ratio = losscheck speed / peer speed
(= peer median / losscheck median; > 1: losscheck is faster).
"""
import argparse
import json
import os
import statistics
import sys
import time

ap = argparse.ArgumentParser()
ap.add_argument("--threads", type=int, default=1)
ap.add_argument("--reps", type=int, default=5)
ap.add_argument("--only", default="", help="substring of the group names to run")
ap.add_argument("--criterion", default=None, help="criterion's output directory")
args = ap.parse_args()

T = args.threads
# before the imports: the thread pools are sized at load
for v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[v] = str(T)
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "")
    + (" --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1" if T == 1 else "")
)
try:  # and the process's CPUs (XLA's own pools included)
    os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:T])
except (AttributeError, OSError):
    pass

import numpy as np

crit = args.criterion or os.environ.get("CRITERION_HOME") or os.path.join(
    os.environ.get("CARGO_TARGET_DIR", "target"), "criterion"
)

peers = {}
try:
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(T)
    peers["torch " + torch.__version__.split("+")[0]] = "torch"
except ImportError as e:
    print(f"skipping PyTorch: {e}", file=sys.stderr)
try:
    import jax
    import jax.numpy as jnp
    import optax

    peers[f"jax {jax.__version__} / optax {optax.__version__}"] = "jax"
except ImportError as e:
    print(f"skipping JAX/optax: {e}", file=sys.stderr)


def median_ms(f):
    for _ in range(2):
        f()
    ts = []
    for _ in range(args.reps):
        t = time.perf_counter()
        f()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts) * 1e3


rng = np.random.default_rng(0x2545F4914F6CDD1D)


# ---- the cases: name -> (numpy inputs, torch fn(inputs) -> loss, jax loss fn, grad argnums)
def ce_inputs(n, c, confident):
    z = (3.0 * rng.standard_normal((n, c), dtype=np.float32)).astype(np.float32)
    y = rng.integers(0, c, size=n)
    if confident:
        z[np.arange(n), y] = z.max(axis=1) + 30.0
    return [z], y


def cases():
    out = []
    for dist in ("normal", "confident"):
        for n, c in ((1024, 32000), (256, 128000)):
            for dt in ("f32", "bf16"):
                out.append((f"cross_entropy_{dt}_{n}x{c}_{dist}", dt, "ce", (n, c, dist == "confident")))
    for dt in ("f32", "bf16"):
        out.append((f"bce_logits_{dt}_16M", dt, "bce", None))
    for loss in ("mse", "huber"):
        for dt in ("f32", "bf16"):
            out.append((f"{loss}_{dt}_16M", dt, loss, None))
    for dt in ("f32", "bf16"):
        out.append((f"dpo_{dt}_1M", dt, "dpo", None))
    out.append(("info_nce_f32_4096x256", "f32", "info_nce", None))
    return out


N16 = 1 << 24


def make(kind, extra):
    """float inputs (differentiated), other (not differentiated), grad argnums"""
    if kind == "ce":
        xs, y = ce_inputs(*extra)
        return xs, y, (0,)
    if kind == "bce":
        return [3.0 * rng.standard_normal(N16, dtype=np.float32)], rng.random(N16, dtype=np.float32), (0,)
    if kind in ("mse", "huber"):
        p = rng.uniform(-4, 4, N16).astype(np.float32)
        t = rng.uniform(-0.5, 0.5, N16).astype(np.float32)
        return [p, t], None, (0, 1)
    if kind == "dpo":
        xs = [(-150.0 + 20.0 * rng.standard_normal(1 << 20)).astype(np.float32) for _ in range(4)]
        return xs, None, (0, 1)
    if kind == "info_nce":
        return [rng.standard_normal((4096, 256), dtype=np.float32) for _ in range(2)], None, (0, 1)
    raise ValueError(kind)


def torch_loss(kind, xs, other):
    if kind == "ce":
        return F.cross_entropy(xs[0], other)
    if kind == "bce":
        return F.binary_cross_entropy_with_logits(xs[0], other)
    if kind == "mse":
        return F.mse_loss(xs[0], xs[1])
    if kind == "huber":
        return F.huber_loss(xs[0], xs[1], delta=1.0)
    if kind == "dpo":
        pc, pr, rc, rr = xs
        return -F.logsigmoid(0.1 * ((pc - rc) - (pr - rr))).mean()
    if kind == "info_nce":
        q, k = F.normalize(xs[0], dim=1), F.normalize(xs[1], dim=1)
        s = q @ k.T / 0.07
        return F.cross_entropy(s, torch.arange(s.shape[0]))


def jax_loss(kind, other):
    if kind == "ce":
        return lambda z: optax.softmax_cross_entropy_with_integer_labels(z, other).mean()
    if kind == "bce":
        return lambda z: optax.sigmoid_binary_cross_entropy(z, other).mean()
    if kind == "mse":
        return lambda p, t: optax.squared_error(p, t).mean()
    if kind == "huber":
        return lambda p, t: optax.huber_loss(p, t, delta=1.0).mean()
    if kind == "dpo":
        return lambda pc, pr, rc, rr: -jax.nn.log_sigmoid(0.1 * ((pc - rc) - (pr - rr))).mean()
    if kind == "info_nce":

        def f(q, k):
            q = q / jnp.maximum(jnp.linalg.norm(q, axis=1, keepdims=True), 1e-12)
            k = k / jnp.maximum(jnp.linalg.norm(k, axis=1, keepdims=True), 1e-12)
            s = q @ k.T / 0.07
            return optax.softmax_cross_entropy_with_integer_labels(s, jnp.arange(s.shape[0])).mean()

        return f


def time_torch(kind, dt, xs, other, argnums):
    tdt = torch.float32 if dt == "f32" else torch.bfloat16
    ts = [torch.from_numpy(x).to(tdt) for x in xs]
    for i in argnums:
        ts[i].requires_grad_(True)
    o = None if other is None else torch.from_numpy(other)
    if o is not None and o.is_floating_point():
        o = o.to(tdt)

    def step():
        for i in argnums:
            ts[i].grad = None
        torch_loss(kind, ts, o).backward()

    return median_ms(step)


def time_jax(kind, dt, xs, other, argnums):
    jdt = jnp.float32 if dt == "f32" else jnp.bfloat16
    js = [jnp.asarray(x, dtype=jdt) for x in xs]
    o = None if other is None else jnp.asarray(other)
    if o is not None and jnp.issubdtype(o.dtype, jnp.floating):
        o = o.astype(jdt)
    f = jax.jit(jax.value_and_grad(jax_loss(kind, o), argnums=argnums))
    return median_ms(lambda: jax.block_until_ready(f(*js)))


def losscheck_ms(group):
    """losscheck's median for `group` at the same thread count: `kernel` is the one-thread
    kernel; with --threads T > 1 the `kernel_tT` benchmark (multiclass, bce_logits and dpo have kernel_t2) if
    there is one, else the one-thread `kernel` (marked with * in the table)."""
    ids = ["kernel"] if T == 1 else [f"kernel_t{T}", "kernel"]
    for kid in ids:
        p = os.path.join(crit, group, kid, "new", "estimates.json")
        try:
            with open(p) as fh:
                return json.load(fh)["median"]["point_estimate"] / 1e6, kid != "kernel" or T == 1
        except OSError:
            pass
    return None, True


rows = []
for name, dt, kind, extra in cases():
    if args.only not in name:
        continue
    xs, other, argnums = make(kind, extra)
    lc, same_threads = losscheck_ms(name)
    r = {"group": name + ("" if same_threads else " *"), "losscheck": lc}
    for label, which in peers.items():
        fn = time_torch if which == "torch" else time_jax
        r[label] = fn(kind, dt, xs, other, argnums)
    print(json.dumps(r), flush=True)
    rows.append(r)


def fmt(x):
    return "—" if x is None else f"{x:.2f}"


head = "| benchmark | losscheck ms | " + " | ".join(f"{p} ms" for p in peers) + " | "
head += " | ".join(f"losscheck ÷ {p.split()[0]}" for p in peers) + " |\n"
head += "|---|" + "---:|" * (1 + 2 * len(peers)) + "\n"
body = ""
for r in rows:
    lc = r["losscheck"]
    ratios = [fmt(r[p] / lc) if lc else "—" for p in peers]
    body += f"| {r['group']} | {fmt(lc)} | " + " | ".join(fmt(r[p]) for p in peers) + " | "
    body += " | ".join(ratios) + " |\n"
note = (
    f"\nthreads: {T} (torch.set_num_threads, " + ("XLA single-thread flags, " if T == 1 else "") + "CPU affinity to T cores); "
    f"median of {args.reps} after 2 warm-up calls; ratio = losscheck speed ÷ peer speed "
    "(peer median / losscheck median)."
    + (
        f" losscheck: the kernel_t{T} benchmark ({T}-thread rayon pool); * = only a one-thread "
        "kernel benchmark exists for that group.\n"
        if T > 1
        else " losscheck: the one-thread kernel.\n"
    )
)
table = head + body + note
print("\n" + table)
if not peers:
    print("no peer installed: nothing timed", file=sys.stderr)
os.makedirs(crit, exist_ok=True)
out_name = "peers.md" if T == 1 else f"peers-t{T}.md"
with open(os.path.join(crit, out_name), "w") as fh:
    fh.write(table)
print(f"(written to {os.path.join(crit, out_name)})")
