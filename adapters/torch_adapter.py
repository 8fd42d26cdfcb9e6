"""PyTorch as an exec subject: `losscheck fuzz --exec 'python3 adapters/torch_adapter.py'`.

Calls `torch.nn.functional` the way a PyTorch user does, in the case's dtype (float32, float16,
bfloat16; PyTorch computes in the input dtype, so no f32 output for 16-bit inputs is declared)
on `--device cpu|cuda` (default cpu). Gradients: `backward` with the cotangent (ones when
absent). Class ids are checked on the host before anything reaches the device, so a CUDA
device-side assert cannot poison later requests; an operator PyTorch does not implement for a
dtype on a device ("not implemented for 'Half'") is answered `unsupported`.

Declared, by what torch.nn.functional has:

| loss | torch | notes |
|---|---|---|
| mse | `mse_loss` | |
| mae | `l1_loss` | |
| huber | `huber_loss(delta=)` | |
| bce | `binary_cross_entropy(weight=)` | PyTorch clamps each log at -100: only `log_floor = -100` is declared |
| bce_logits | `binary_cross_entropy_with_logits(weight=, pos_weight=)` | |
| cross_entropy | `cross_entropy(weight=, ignore_index=, label_smoothing=)` | [N,C], [B,T,C] (permuted to PyTorch's [B,C,T]), soft targets; no sequence_mean |
| nll | `nll_loss(weight=, ignore_index=)` | |
| multi_margin | `multi_margin_loss(p=, margin=, weight=)` | |
| kl_div | `kl_div(log_target=)` | `mean` is PyTorch's `reduction="mean"` (over N·C), what a user gets by default; `none` is summed over the classes (PyTorch's is elementwise [N,C]) |
| gaussian_nll | `gaussian_nll_loss(full=, eps=)` | |
| triplet | `triplet_margin_loss(margin=, eps=)` | p = 2 |
| margin_ranking | `margin_ranking_loss(margin=)` | |

Per-element weights (`weight`) are declared only where PyTorch takes them (bce, bce_logits);
masks nowhere (PyTorch has none). The other catalogue losses have no torch.nn.functional
function and are not declared.

NOTE: written against the PyTorch 2.x API; it could not be run where it was written (no torch
wheel reachable); tests/exec_protocol.rs runs it when torch is importable.
"""

import argparse
import os
import sys

ap = argparse.ArgumentParser()
ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
args = ap.parse_args()

sys.dont_write_bytecode = True  # keep adapters/ free of __pycache__
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from losscheck_adapter import InvalidInput, Subject, Unsupported  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

DEV = torch.device(args.device)
DT = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}
ALL = list(DT)
RED3 = ["none", "sum", "mean"]

subject = Subject("torch %s %s" % (torch.__version__, args.device))


def t(req, name, grad=False):
    """An input on the device: float data in the case dtype (exact), ids as int64."""
    spec = req.inputs[name]
    shape = spec["shape"]
    if spec.get("dtype") == "i64":
        x = torch.tensor(req.ints(name), dtype=torch.int64).reshape(shape)
    else:
        # float64 holds every value exactly; the cast to the dtype is exact too
        x = torch.tensor(req.floats(name), dtype=torch.float64).reshape(shape).to(DT[req.dtype])
    x = x.to(DEV)
    if grad:
        x.requires_grad_(True)
    return x


def floats(x):
    return x.detach().to("cpu", torch.float64).reshape(-1).tolist()


def check_ids(req, target, classes, ignore):
    """Class ids on the host: out of range (and not ignored) is invalid input."""
    for k, y in enumerate(req.ints(target)):
        if y != ignore and not 0 <= y < classes:
            raise InvalidInput("%s[%d]=%d is out of range for %d classes" % (target, k, y, classes))


def run(req, diff, call):
    """Make the differentiable inputs, call torch, backward with the cotangent."""
    xs = {n: t(req, n, grad=True) for n in diff}
    try:
        out = call(xs)
        want = [g for g in req.grad if g in xs]
        grads = {}
        if want:
            cot = t(req, "cotangent").to(out.dtype) if req.has("cotangent") else torch.ones_like(out)
            out.backward(cot)
            for g in want:
                gr = xs[g].grad
                grads[g] = floats(gr) if gr is not None else [0.0] * xs[g].numel()
    except RuntimeError as e:
        if "not implemented for" in str(e):
            raise Unsupported(str(e).splitlines()[0])
        raise
    return req.result(floats(out), value_shape=list(out.shape), grad=grads)


def declare(loss, params=(), inputs=(), reductions=RED3, shapes=None, fixed=None):
    p = {k: "any" for k in params}
    p.update(fixed or {})
    return subject.loss(loss, dtypes=ALL, reductions=reductions, params=p,
                        inputs=list(inputs) + ["cotangent"], shapes=shapes, grad=True)


@declare("mse")
def mse(req):
    return run(req, ["pred", "target"], lambda x: F.mse_loss(x["pred"], x["target"], reduction=req.reduction))


@declare("mae")
def mae(req):
    return run(req, ["pred", "target"], lambda x: F.l1_loss(x["pred"], x["target"], reduction=req.reduction))


@declare("huber", params=["delta"])
def huber(req):
    return run(req, ["pred", "target"], lambda x: F.huber_loss(
        x["pred"], x["target"], reduction=req.reduction, delta=req.param("delta", 1.0)))


@declare("bce", inputs=["weight"], fixed={"log_floor": [-100]})
def bce(req):
    w = t(req, "weight") if req.has("weight") else None
    target = t(req, "target")
    return run(req, ["prob"], lambda x: F.binary_cross_entropy(x["prob"], target, weight=w, reduction=req.reduction))


@declare("bce_logits", inputs=["weight", "pos_weight"])
def bce_logits(req):
    w = t(req, "weight") if req.has("weight") else None
    pw = t(req, "pos_weight") if req.has("pos_weight") else None
    target = t(req, "target")
    return run(req, ["logit"], lambda x: F.binary_cross_entropy_with_logits(
        x["logit"], target, weight=w, pos_weight=pw, reduction=req.reduction))


@declare("cross_entropy", params=["ignore_index", "label_smoothing"], inputs=["class_weight"],
         shapes=["NC", "BTC", "soft"])
def cross_entropy(req):
    shape = req.shape("logits")
    cw = t(req, "class_weight") if req.has("class_weight") else None
    ig = int(req.param("ignore_index", -100))
    soft = req.inputs["target"].get("dtype") != "i64"
    if not soft:
        check_ids(req, "target", shape[-1], ig)
    target = t(req, "target")
    btc = len(shape) == 3

    def call(x):
        z = x["logits"]
        if btc:  # PyTorch wants the classes in dim 1: [B,C,T]
            z = z.permute(0, 2, 1)
            tt = target.permute(0, 2, 1) if soft else target
        else:
            tt = target
        # ignore_index applies to class ids only; PyTorch rejects any but its default with
        # probabilities as targets
        out = F.cross_entropy(z, tt, weight=cw, ignore_index=-100 if soft else ig,
                              reduction=req.reduction,
                              label_smoothing=float(req.param("label_smoothing", 0.0)))
        return out
    return run(req, ["logits"], call)


@declare("nll", params=["ignore_index"], inputs=["class_weight"])
def nll(req):
    shape = req.shape("logp")
    cw = t(req, "class_weight") if req.has("class_weight") else None
    ig = int(req.param("ignore_index", -100))
    check_ids(req, "target", shape[-1], ig)
    target = t(req, "target")
    return run(req, ["logp"], lambda x: F.nll_loss(x["logp"], target, weight=cw, ignore_index=ig,
                                                   reduction=req.reduction))


@declare("multi_margin", params=["margin", "p"], inputs=["class_weight"])
def multi_margin(req):
    shape = req.shape("scores")
    check_ids(req, "target", shape[-1], None)
    cw = t(req, "class_weight") if req.has("class_weight") else None
    target = t(req, "target")
    return run(req, ["scores"], lambda x: F.multi_margin_loss(
        x["scores"], target, p=int(req.param("p", 1)), margin=float(req.param("margin", 1.0)),
        weight=cw, reduction=req.reduction))


@declare("kl_div", params=["log_target"])
def kl_div(req):
    target = t(req, "target")
    lt = bool(req.param("log_target", False))
    if req.reduction == "none":
        # PyTorch's `none` is elementwise [N, C]; the catalogue's `none` is one loss per row
        # (Σ_c), so the adapter sums the classes — the user's code would do the same
        return run(req, ["input"], lambda x: F.kl_div(x["input"], target, reduction="none",
                                                      log_target=lt).sum(-1))
    return run(req, ["input"], lambda x: F.kl_div(x["input"], target, reduction=req.reduction,
                                                  log_target=lt))


@declare("gaussian_nll", params=["eps", "full"])
def gaussian_nll(req):
    target = t(req, "target")
    return run(req, ["mean", "var"], lambda x: F.gaussian_nll_loss(
        x["mean"], target, x["var"], full=bool(req.param("full", False)),
        eps=float(req.param("eps", 1e-6)), reduction=req.reduction))


@declare("triplet", params=["margin", "eps"])
def triplet(req):
    return run(req, ["anchor", "positive", "negative"], lambda x: F.triplet_margin_loss(
        x["anchor"], x["positive"], x["negative"], margin=float(req.param("margin", 1.0)), p=2,
        eps=float(req.param("eps", 0.0)), reduction=req.reduction))


@declare("margin_ranking", params=["margin"])
def margin_ranking(req):
    target = t(req, "target")

    def call(x):
        return F.margin_ranking_loss(x["s1"], x["s2"], target.to(x["s1"].dtype),
                                     margin=float(req.param("margin", 0.0)), reduction=req.reduction)
    return run(req, ["s1", "s2"], call)


if __name__ == "__main__":
    subject.serve()
