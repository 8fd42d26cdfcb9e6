"""A trivial exec subject: answers every elementwise case with zeros of the right shapes, as
fast as the protocol loop allows. For measuring exec round trips (benches/exec.rs), not for
correctness (the fuzzer would flag it everywhere)."""

import os
import sys

sys.dont_write_bytecode = True  # keep adapters/ free of __pycache__
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from losscheck_adapter import Subject  # noqa: E402

subject = Subject("trivial (zeros)")


def zeros(req):
    n = 1
    for d in req.shape(req.grad_base()):
        n *= d
    value = [0.0] * (n if req.reduction == "none" else 1)
    grad = {g: [0.0] * len(req.inputs[g]["data"]) for g in req.grad}
    return req.result(value, grad=grad)


for loss in ["mse", "mae", "huber", "quantile", "log_cosh", "bce", "bce_logits", "hinge", "focal"]:
    subject.loss(loss, dtypes=["f32", "f16", "bf16"], out_dtypes=["f32"],
                 reductions=["none", "sum", "mean"], params={"delta": "any", "tau": "any"},
                 inputs=["weight", "mask", "cotangent", "pos_weight"], grad=True)(zeros)

if __name__ == "__main__":
    subject.serve()
