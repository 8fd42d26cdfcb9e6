//! The catalogue: every loss of DESIGN.md with its inputs, shapes, params, defaults, domains,
//! differentiable inputs and reductions — as data, in this one place — and the validation that
//! every kernel, oracle and subject-facing check shares.

use crate::case::{Case, LossError, ParamValue, Reduction};
use crate::dtype::Dtype;
use crate::tensor::{Tensor, TensorDtype};
use std::collections::BTreeMap;

/// Loss families: one module per family in `kernels/` and in `oracles/`, with these names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    Regression,
    Classification,
    Probabilistic,
    Contrastive,
    Ranking,
    Preference,
}

impl Family {
    pub fn name(self) -> &'static str {
        match self {
            Family::Regression => "regression",
            Family::Classification => "classification",
            Family::Probabilistic => "probabilistic",
            Family::Contrastive => "contrastive",
            Family::Ranking => "ranking",
            Family::Preference => "preference",
        }
    }
}

/// How a loss maps inputs to its unreduced output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Structure {
    /// Inputs of any shape, all the same; one loss per element.
    Elementwise,
    /// One loss per row (the leading dims of the layout).
    Rowwise,
}

/// The set a float input's values must lie in (NaN is never a domain violation for data
/// inputs: it propagates; for weights it is invalid).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Domain {
    /// Any value, ±inf included.
    Any,
    /// [0, 1].
    UnitInterval,
    /// ≥ 0, +inf included (variances).
    NonNegative,
    /// `kl_div`'s target: [0, 1], or ≤ 0 (a log-probability) when `log_target`.
    KlTarget,
    /// Finite and ≥ 0, NaN invalid: weights, class weights, pos_weight.
    Weight,
}

/// What an input holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InputKind {
    /// A float tensor in the case dtype.
    Float(Domain),
    /// Class ids in [0, C), or `ignore_index` (i64).
    ClassId,
    /// `cross_entropy`'s target: class ids (i64), or soft targets in [0, 1] (float).
    ClassIdOrSoft,
    /// ±1 labels (i64).
    Sign,
    /// {0, 1} labels (i64).
    Binary,
    /// A {0, 1} mask (i64).
    Mask,
}

impl InputKind {
    /// Is the input held as i64 by default (soft CE targets declare a float dtype)?
    pub fn is_integer(self) -> bool {
        !matches!(self, InputKind::Float(_))
    }
}

/// Shape of an input, in dim symbols bound per case (`N`, `C`, `D`, `K`, `B`, `T`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dims {
    /// Any shape, the same for every elementwise input (`*`).
    Elementwise,
    /// `pos_weight`: the elementwise shape, or its last dim alone (broadcast over rows).
    ElementwiseOrLast,
    /// Named dims; the row dims of the layout first.
    Named(&'static [&'static str]),
}

#[derive(Clone, Copy, Debug)]
pub struct InputSpec {
    pub name: &'static str,
    pub kind: InputKind,
    pub optional: bool,
    pub doc: &'static str,
}

/// One accepted arrangement of shapes.
#[derive(Clone, Copy, Debug)]
pub struct Layout {
    pub name: &'static str,
    /// The dims of each input in this layout (optional ones included).
    pub dims: &'static [(&'static str, Dims)],
    /// The shape of the unreduced output: one loss per row.
    pub rows: Dims,
    /// For `ClassIdOrSoft` targets: does this layout take soft (float) targets?
    pub soft: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParamKind {
    Float,
    /// A float or none.
    OptFloat,
    Int,
    Bool,
    Choice(&'static [&'static str]),
}

impl ParamKind {
    pub fn name(self) -> &'static str {
        match self {
            ParamKind::Float => "float",
            ParamKind::OptFloat => "float or null",
            ParamKind::Int => "integer",
            ParamKind::Bool => "boolean",
            ParamKind::Choice(_) => "choice",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Default {
    Float(f64),
    Int(i64),
    Bool(bool),
    Str(&'static str),
    None,
}

impl Default {
    pub fn to_value(self) -> ParamValue {
        match self {
            Default::Float(x) => ParamValue::Float(x),
            Default::Int(i) => ParamValue::Int(i),
            Default::Bool(b) => ParamValue::Bool(b),
            Default::Str(s) => ParamValue::Str(s.to_string()),
            Default::None => ParamValue::Null,
        }
    }
}

/// The domain of a float param (every float param is also finite).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ParamDomain {
    /// Any finite value.
    Finite,
    /// > 0.
    Positive,
    /// ≥ 0.
    NonNegative,
    /// ≤ 0.
    NonPositive,
    /// (0, 1).
    OpenUnit,
    /// [0, 1].
    ClosedUnit,
    /// [lo, hi].
    Closed(f64, f64),
    /// Any value (integers, booleans, choices).
    Any,
    /// One of these values.
    OneOf(&'static [f64]),
}

impl ParamDomain {
    pub fn contains(self, x: f64) -> bool {
        if !x.is_finite() {
            return false;
        }
        match self {
            ParamDomain::Finite | ParamDomain::Any => true,
            ParamDomain::Positive => x > 0.0,
            ParamDomain::NonNegative => x >= 0.0,
            ParamDomain::NonPositive => x <= 0.0,
            ParamDomain::OpenUnit => x > 0.0 && x < 1.0,
            ParamDomain::ClosedUnit => (0.0..=1.0).contains(&x),
            ParamDomain::Closed(lo, hi) => (lo..=hi).contains(&x),
            ParamDomain::OneOf(v) => v.contains(&x),
        }
    }
    pub fn describe(self) -> String {
        match self {
            ParamDomain::Finite | ParamDomain::Any => "finite".into(),
            ParamDomain::Positive => "> 0".into(),
            ParamDomain::NonNegative => ">= 0".into(),
            ParamDomain::NonPositive => "<= 0".into(),
            ParamDomain::OpenUnit => "in (0, 1)".into(),
            ParamDomain::ClosedUnit => "in [0, 1]".into(),
            ParamDomain::Closed(a, b) => format!("in [{a}, {b}]"),
            ParamDomain::OneOf(v) => format!("one of {v:?}"),
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub struct ParamSpec {
    pub name: &'static str,
    pub kind: ParamKind,
    pub default: Default,
    pub domain: ParamDomain,
    pub doc: &'static str,
}

/// A catalogue entry.
#[derive(Clone, Copy, Debug)]
pub struct LossSpec {
    pub id: &'static str,
    pub family: Family,
    pub structure: Structure,
    /// Every input, required and optional (`weight`, `mask`, `class_weight`, `pos_weight`,
    /// `cotangent` included where the loss takes them).
    pub inputs: &'static [InputSpec],
    pub layouts: &'static [Layout],
    pub params: &'static [ParamSpec],
    /// Differentiable inputs.
    pub grads: &'static [&'static str],
    /// The per-element or per-row formula, as DESIGN.md writes it.
    pub formula: &'static str,
}

impl LossSpec {
    pub fn input(&self, name: &str) -> Option<&'static InputSpec> {
        self.inputs.iter().find(|i| i.name == name)
    }
    pub fn param(&self, name: &str) -> Option<&'static ParamSpec> {
        self.params.iter().find(|p| p.name == name)
    }
    pub fn required_inputs(&self) -> impl Iterator<Item = &'static InputSpec> {
        self.inputs.iter().filter(|i| !i.optional)
    }
    pub fn input_names(&self) -> String {
        self.inputs
            .iter()
            .map(|i| i.name)
            .collect::<Vec<_>>()
            .join(", ")
    }
    pub fn param_names(&self) -> String {
        let mut v: Vec<&str> = vec!["reduction"];
        v.extend(self.params.iter().map(|p| p.name));
        v.join(", ")
    }
    /// Does the loss take per-element / per-row `weight` and `mask` inputs?
    pub fn has_weight_mask(&self) -> bool {
        self.input("mask").is_some()
    }
    /// Reductions this loss accepts.
    pub fn reductions(&self) -> &'static [Reduction] {
        if self.id == "cross_entropy" {
            &Reduction::ALL
        } else {
            &[Reduction::None, Reduction::Sum, Reduction::Mean]
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The data.

const fn input(name: &'static str, kind: InputKind, doc: &'static str) -> InputSpec {
    InputSpec {
        name,
        kind,
        optional: false,
        doc,
    }
}
const fn opt(name: &'static str, kind: InputKind, doc: &'static str) -> InputSpec {
    InputSpec {
        name,
        kind,
        optional: true,
        doc,
    }
}
const fn fparam(
    name: &'static str,
    default: f64,
    domain: ParamDomain,
    doc: &'static str,
) -> ParamSpec {
    ParamSpec {
        name,
        kind: ParamKind::Float,
        default: Default::Float(default),
        domain,
        doc,
    }
}

const ANY: InputKind = InputKind::Float(Domain::Any);
const UNIT: InputKind = InputKind::Float(Domain::UnitInterval);
const W: InputSpec = opt(
    "weight",
    InputKind::Float(Domain::Weight),
    "per-output-element weight, >= 0",
);
const M: InputSpec = opt("mask", InputKind::Mask, "per-output-element mask, 0 or 1");
const COT: InputSpec = opt(
    "cotangent",
    ANY,
    "scales the gradient: the output's shape for `none`, [] otherwise",
);
const CW: InputSpec = opt(
    "class_weight",
    InputKind::Float(Domain::Weight),
    "[C] per-class weight, >= 0",
);

const E: Dims = Dims::Elementwise;
const fn named(d: &'static [&'static str]) -> Dims {
    Dims::Named(d)
}

/// Layout of an elementwise loss over the given inputs (weight, mask, cotangent included).
macro_rules! elementwise_layout {
    ($($name:expr),*) => {
        &[Layout {
            name: "elementwise",
            dims: &[$(($name, E),)* ("weight", E), ("mask", E), ("cotangent", E)],
            rows: E,
            soft: false,
        }]
    };
}

const NONE: &[ParamSpec] = &[];
const MARGIN1: ParamSpec = fparam("margin", 1.0, ParamDomain::Finite, "margin, finite");

pub static CATALOGUE: &[LossSpec] = &[
    // ---- regression
    LossSpec {
        id: "mse", family: Family::Regression, structure: Structure::Elementwise,
        inputs: &[input("pred", ANY, "prediction"), input("target", ANY, "target"), W, M, COT],
        layouts: elementwise_layout!("pred", "target"),
        params: NONE, grads: &["pred", "target"], formula: "(pred−target)²",
    },
    LossSpec {
        id: "mae", family: Family::Regression, structure: Structure::Elementwise,
        inputs: &[input("pred", ANY, "prediction"), input("target", ANY, "target"), W, M, COT],
        layouts: elementwise_layout!("pred", "target"),
        params: NONE, grads: &["pred", "target"], formula: "|pred−target|",
    },
    LossSpec {
        id: "huber", family: Family::Regression, structure: Structure::Elementwise,
        inputs: &[input("pred", ANY, "prediction"), input("target", ANY, "target"), W, M, COT],
        layouts: elementwise_layout!("pred", "target"),
        params: &[fparam("delta", 1.0, ParamDomain::Positive, "switch point between the quadratic and linear parts, > 0")],
        grads: &["pred", "target"], formula: "½r² if |r|≤δ else δ(|r|−½δ), r = pred−target",
    },
    LossSpec {
        id: "quantile", family: Family::Regression, structure: Structure::Elementwise,
        inputs: &[input("pred", ANY, "prediction"), input("target", ANY, "target"), W, M, COT],
        layouts: elementwise_layout!("pred", "target"),
        params: &[fparam("tau", 0.5, ParamDomain::OpenUnit, "quantile level, in (0, 1)")],
        grads: &["pred", "target"], formula: "max(τu, (τ−1)u), u = target−pred",
    },
    LossSpec {
        id: "log_cosh", family: Family::Regression, structure: Structure::Elementwise,
        inputs: &[input("pred", ANY, "prediction"), input("target", ANY, "target"), W, M, COT],
        layouts: elementwise_layout!("pred", "target"),
        params: NONE, grads: &["pred", "target"], formula: "log cosh(pred−target)",
    },
    // ---- classification
    LossSpec {
        id: "bce", family: Family::Classification, structure: Structure::Elementwise,
        inputs: &[input("prob", UNIT, "probability in [0, 1]"), input("target", UNIT, "target in [0, 1]"), W, M, COT],
        layouts: elementwise_layout!("prob", "target"),
        params: &[ParamSpec { name: "log_floor", kind: ParamKind::OptFloat, default: Default::None, domain: ParamDomain::NonPositive, doc: "floor on each log (PyTorch: -100), <= 0, or null" }],
        grads: &["prob"], formula: "−(t·L(p) + (1−t)·L(1−p)), L = log or max(log, floor)",
    },
    LossSpec {
        id: "bce_logits", family: Family::Classification, structure: Structure::Elementwise,
        inputs: &[input("logit", ANY, "logit"), input("target", UNIT, "target in [0, 1]"),
                  opt("pos_weight", InputKind::Float(Domain::Weight), "weight of the positive term, >= 0: the logit's shape, or [C] broadcast over the last dim"),
                  W, M, COT],
        layouts: &[Layout { name: "elementwise",
            dims: &[("logit", E), ("target", E), ("pos_weight", Dims::ElementwiseOrLast), ("weight", E), ("mask", E), ("cotangent", E)],
            rows: E, soft: false }],
        params: NONE, grads: &["logit"], formula: "pw·t·softplus(−z) + (1−t)·softplus(z)",
    },
    LossSpec {
        id: "cross_entropy", family: Family::Classification, structure: Structure::Rowwise,
        inputs: &[input("logits", ANY, "logits [N,C] or [B,T,C]"),
                  input("target", InputKind::ClassIdOrSoft, "class ids [N] / [B,T] (i64), or soft targets [N,C] in [0, 1]"),
                  CW, COT],
        layouts: &[
            Layout { name: "NC", dims: &[("logits", named(&["N", "C"])), ("target", named(&["N"])), ("class_weight", named(&["C"])), ("cotangent", named(&["N"]))], rows: named(&["N"]), soft: false },
            Layout { name: "BTC", dims: &[("logits", named(&["B", "T", "C"])), ("target", named(&["B", "T"])), ("class_weight", named(&["C"])), ("cotangent", named(&["B", "T"]))], rows: named(&["B", "T"]), soft: false },
            Layout { name: "soft", dims: &[("logits", named(&["N", "C"])), ("target", named(&["N", "C"])), ("class_weight", named(&["C"])), ("cotangent", named(&["N"]))], rows: named(&["N"]), soft: true },
        ],
        params: &[
            ParamSpec { name: "ignore_index", kind: ParamKind::Int, default: Default::Int(-100), domain: ParamDomain::Any, doc: "target id whose rows are ignored" },
            fparam("label_smoothing", 0.0, ParamDomain::ClosedUnit, "in [0, 1]"),
        ],
        grads: &["logits"], formula: "(1−ε)·w_y·(−log p_y) + (ε/C)·Σ_c w_c·(−log p_c), p = softmax(z)",
    },
    LossSpec {
        id: "nll", family: Family::Classification, structure: Structure::Rowwise,
        inputs: &[input("logp", ANY, "log-probabilities [N,C]"), input("target", InputKind::ClassId, "class ids [N]"), CW, COT],
        layouts: &[Layout { name: "NC", dims: &[("logp", named(&["N", "C"])), ("target", named(&["N"])), ("class_weight", named(&["C"])), ("cotangent", named(&["N"]))], rows: named(&["N"]), soft: false }],
        params: &[ParamSpec { name: "ignore_index", kind: ParamKind::Int, default: Default::Int(-100), domain: ParamDomain::Any, doc: "target id whose rows are ignored" }],
        grads: &["logp"], formula: "−w_y·logp_y",
    },
    LossSpec {
        id: "hinge", family: Family::Classification, structure: Structure::Elementwise,
        inputs: &[input("score", ANY, "score"), input("target", InputKind::Sign, "±1 label"), W, M, COT],
        layouts: elementwise_layout!("score", "target"),
        params: &[MARGIN1], grads: &["score"], formula: "max(0, m − t·s)",
    },
    LossSpec {
        id: "multi_margin", family: Family::Classification, structure: Structure::Rowwise,
        inputs: &[input("scores", ANY, "scores [N,C]"), input("target", InputKind::ClassId, "class ids [N]"), CW, W, M, COT],
        layouts: &[Layout { name: "NC", dims: &[("scores", named(&["N", "C"])), ("target", named(&["N"])), ("class_weight", named(&["C"])), ("weight", named(&["N"])), ("mask", named(&["N"])), ("cotangent", named(&["N"]))], rows: named(&["N"]), soft: false }],
        params: &[MARGIN1, ParamSpec { name: "p", kind: ParamKind::Int, default: Default::Int(1), domain: ParamDomain::OneOf(&[1.0, 2.0]), doc: "1 or 2" }],
        grads: &["scores"], formula: "w_y·Σ_{j≠y} max(0, m − x_y + x_j)^p / C",
    },
    LossSpec {
        id: "focal", family: Family::Classification, structure: Structure::Elementwise,
        inputs: &[input("logit", ANY, "logit"), input("target", UNIT, "target in [0, 1]"), W, M, COT],
        layouts: elementwise_layout!("logit", "target"),
        params: &[
            ParamSpec { name: "alpha", kind: ParamKind::OptFloat, default: Default::None, domain: ParamDomain::ClosedUnit, doc: "in [0, 1], or null" },
            fparam("gamma", 2.0, ParamDomain::NonNegative, ">= 0"),
        ],
        grads: &["logit"], formula: "α_t·(1−p_t)^γ·bce_logits(z, t)",
    },
    // ---- probabilistic
    LossSpec {
        id: "gaussian_nll", family: Family::Probabilistic, structure: Structure::Elementwise,
        inputs: &[input("mean", ANY, "predicted mean"), input("target", ANY, "target"), input("var", InputKind::Float(Domain::NonNegative), "predicted variance, >= 0"), W, M, COT],
        layouts: elementwise_layout!("mean", "target", "var"),
        params: &[
            fparam("eps", 1e-6, ParamDomain::Positive, "variance floor, > 0"),
            ParamSpec { name: "full", kind: ParamKind::Bool, default: Default::Bool(false), domain: ParamDomain::Any, doc: "add ½ log 2π" },
        ],
        grads: &["mean", "var"], formula: "½(log v′ + (target−mean)²/v′) [+ ½ log 2π], v′ = max(var, eps)",
    },
    LossSpec {
        id: "kl_div", family: Family::Probabilistic, structure: Structure::Rowwise,
        inputs: &[input("input", ANY, "log q [N,C]"), input("target", InputKind::Float(Domain::KlTarget), "p [N,C] in [0, 1], or log p <= 0 with log_target"), W, M, COT],
        layouts: &[Layout { name: "NC", dims: &[("input", named(&["N", "C"])), ("target", named(&["N", "C"])), ("weight", named(&["N"])), ("mask", named(&["N"])), ("cotangent", named(&["N"]))], rows: named(&["N"]), soft: false }],
        params: &[ParamSpec { name: "log_target", kind: ParamKind::Bool, default: Default::Bool(false), domain: ParamDomain::Any, doc: "target holds log p" }],
        grads: &["input"], formula: "Σ_c p·(log p − log q)",
    },
    LossSpec {
        id: "distill_kl", family: Family::Probabilistic, structure: Structure::Rowwise,
        inputs: &[input("student", ANY, "student logits [N,C]"), input("teacher", ANY, "teacher logits [N,C]"), W, M, COT],
        layouts: &[Layout { name: "NC", dims: &[("student", named(&["N", "C"])), ("teacher", named(&["N", "C"])), ("weight", named(&["N"])), ("mask", named(&["N"])), ("cotangent", named(&["N"]))], rows: named(&["N"]), soft: false }],
        params: &[
            fparam("temperature", 1.0, ParamDomain::Positive, "> 0"),
            ParamSpec { name: "direction", kind: ParamKind::Choice(&["forward", "reverse"]), default: Default::Str("forward"), domain: ParamDomain::Any, doc: "forward: KL(teacher ‖ student); reverse swaps" },
        ],
        grads: &["student"], formula: "T²·KL(softmax(teacher/T) ‖ softmax(student/T))",
    },
    LossSpec {
        id: "neg_elbo", family: Family::Probabilistic, structure: Structure::Rowwise,
        inputs: &[input("x", UNIT, "data [N,D] in [0, 1]"), input("recon_logits", ANY, "reconstruction logits [N,D]"), input("mu", ANY, "posterior mean [N,K]"), input("logvar", ANY, "posterior log-variance [N,K]"), W, M, COT],
        layouts: &[Layout { name: "NDK", dims: &[("x", named(&["N", "D"])), ("recon_logits", named(&["N", "D"])), ("mu", named(&["N", "K"])), ("logvar", named(&["N", "K"])), ("weight", named(&["N"])), ("mask", named(&["N"])), ("cotangent", named(&["N"]))], rows: named(&["N"]), soft: false }],
        params: &[fparam("beta", 1.0, ParamDomain::NonNegative, ">= 0")],
        grads: &["recon_logits", "mu", "logvar"], formula: "Σ_d bce_logits(recon, x) + β·½Σ_k (μ² + e^{lv} − 1 − lv)",
    },
    LossSpec {
        id: "brier", family: Family::Probabilistic, structure: Structure::Rowwise,
        inputs: &[input("prob", UNIT, "probabilities [N,C] in [0, 1]"), input("target", InputKind::ClassId, "class ids [N]"), W, M, COT],
        layouts: &[Layout { name: "NC", dims: &[("prob", named(&["N", "C"])), ("target", named(&["N"])), ("weight", named(&["N"])), ("mask", named(&["N"])), ("cotangent", named(&["N"]))], rows: named(&["N"]), soft: false }],
        params: NONE, grads: &["prob"], formula: "Σ_c (p_c − 1[c=y])²",
    },
    // ---- contrastive
    LossSpec {
        id: "contrastive", family: Family::Contrastive, structure: Structure::Rowwise,
        inputs: &[input("x1", ANY, "[N,D]"), input("x2", ANY, "[N,D]"), input("target", InputKind::Binary, "[N], 1 = similar"), W, M, COT],
        layouts: &[Layout { name: "ND", dims: &[("x1", named(&["N", "D"])), ("x2", named(&["N", "D"])), ("target", named(&["N"])), ("weight", named(&["N"])), ("mask", named(&["N"])), ("cotangent", named(&["N"]))], rows: named(&["N"]), soft: false }],
        params: &[MARGIN1], grads: &["x1", "x2"], formula: "y·d² + (1−y)·max(0, m−d)², d = ‖x1−x2‖₂",
    },
    LossSpec {
        id: "triplet", family: Family::Contrastive, structure: Structure::Rowwise,
        inputs: &[input("anchor", ANY, "[N,D]"), input("positive", ANY, "[N,D]"), input("negative", ANY, "[N,D]"), W, M, COT],
        layouts: &[Layout { name: "ND", dims: &[("anchor", named(&["N", "D"])), ("positive", named(&["N", "D"])), ("negative", named(&["N", "D"])), ("weight", named(&["N"])), ("mask", named(&["N"])), ("cotangent", named(&["N"]))], rows: named(&["N"]), soft: false }],
        params: &[MARGIN1, fparam("eps", 0.0, ParamDomain::NonNegative, "added to every coordinate of u−v, >= 0")],
        grads: &["anchor", "positive", "negative"], formula: "max(0, d(a,p) − d(a,n) + m), d(u,v) = ‖u−v+eps·1‖₂",
    },
    LossSpec {
        id: "info_nce", family: Family::Contrastive, structure: Structure::Rowwise,
        inputs: &[input("query", ANY, "[N,D]"), input("key", ANY, "[N,D]; key i is the positive of query i"), W, M, COT],
        layouts: &[Layout { name: "ND", dims: &[("query", named(&["N", "D"])), ("key", named(&["N", "D"])), ("weight", named(&["N"])), ("mask", named(&["N"])), ("cotangent", named(&["N"]))], rows: named(&["N"]), soft: false }],
        params: &[
            fparam("temperature", 0.07, ParamDomain::Positive, "> 0"),
            ParamSpec { name: "normalize", kind: ParamKind::Bool, default: Default::Bool(true), domain: ParamDomain::Any, doc: "cosine similarity" },
            fparam("eps", 1e-12, ParamDomain::Positive, "norm floor, > 0"),
            ParamSpec { name: "symmetric", kind: ParamKind::Bool, default: Default::Bool(false), domain: ParamDomain::Any, doc: "average with the key-side loss (CLIP)" },
        ],
        grads: &["query", "key"], formula: "−log softmax_j(s_ij/τ) at j=i, s = q̂·k̂ᵀ",
    },
    // ---- ranking
    LossSpec {
        id: "margin_ranking", family: Family::Ranking, structure: Structure::Elementwise,
        inputs: &[input("s1", ANY, "score"), input("s2", ANY, "score"), input("target", InputKind::Sign, "±1: +1 when s1 should rank higher"), W, M, COT],
        layouts: elementwise_layout!("s1", "s2", "target"),
        params: &[fparam("margin", 0.0, ParamDomain::Finite, "finite")],
        grads: &["s1", "s2"], formula: "max(0, −y(s1−s2) + m)",
    },
    LossSpec {
        id: "pairwise_logistic", family: Family::Ranking, structure: Structure::Elementwise,
        inputs: &[input("chosen", ANY, "score of the preferred item"), input("rejected", ANY, "score of the other"), W, M, COT],
        layouts: elementwise_layout!("chosen", "rejected"),
        params: NONE, grads: &["chosen", "rejected"], formula: "softplus(rejected − chosen)",
    },
    // ---- preference
    LossSpec {
        id: "dpo", family: Family::Preference, structure: Structure::Elementwise,
        inputs: &[input("policy_chosen", ANY, "sequence log-prob"), input("policy_rejected", ANY, "sequence log-prob"),
                  input("ref_chosen", ANY, "reference log-prob"), input("ref_rejected", ANY, "reference log-prob"), W, M, COT],
        layouts: elementwise_layout!("policy_chosen", "policy_rejected", "ref_chosen", "ref_rejected"),
        params: &[fparam("beta", 0.1, ParamDomain::Positive, "> 0"), fparam("label_smoothing", 0.0, ParamDomain::Closed(0.0, 0.5), "in [0, ½]")],
        grads: &["policy_chosen", "policy_rejected"], formula: "(1−ε)·softplus(−βh) + ε·softplus(βh), h = (πc−rc) − (πr−rr)",
    },
];

/// The catalogue entry of a loss id.
pub fn spec(id: &str) -> Option<&'static LossSpec> {
    CATALOGUE.iter().find(|s| s.id == id)
}

/// All loss ids, in catalogue order.
pub fn ids() -> impl Iterator<Item = &'static str> {
    CATALOGUE.iter().map(|s| s.id)
}

// ---------------------------------------------------------------------------------------------
// Validation.

/// What validation learned about a case: the layout, the dim bindings and the row shape.
#[derive(Clone, Debug, PartialEq)]
pub struct Checked {
    pub layout: &'static str,
    /// Bound dim symbols (`N`, `C`, …); elementwise losses bind nothing.
    pub dims: BTreeMap<&'static str, usize>,
    /// Shape of the unreduced output.
    pub row_shape: Vec<usize>,
    /// Number of output elements (rows).
    pub rows: usize,
    /// Soft-target `cross_entropy`.
    pub soft: bool,
}

impl Checked {
    pub fn dim(&self, d: &str) -> usize {
        self.dims.get(d).copied().unwrap_or(0)
    }
    /// Shape of the value for a reduction: the row shape for `none`, `[]` otherwise.
    pub fn value_shape(&self, r: Reduction) -> Vec<usize> {
        if r == Reduction::None {
            self.row_shape.clone()
        } else {
            vec![]
        }
    }
}

fn kind_word(r: Reduction) -> &'static str {
    r.name()
}

/// Validate a case against its catalogue entry: inputs present and known, dtypes, shapes (one
/// layout must fit), params and their domains, reduction, and every value's range (skipping
/// masked, zero-weight and ignored positions). The error names the input, the index and the
/// value.
pub fn validate(case: &Case) -> Result<Checked, LossError> {
    let spec = spec(&case.loss)
        .ok_or_else(|| LossError::invalid(format!("unknown loss {:?}", case.loss)))?;
    let bad = LossError::invalid;
    // inputs: required present, none unknown, dtypes.
    for i in spec.required_inputs() {
        if !case.inputs.contains_key(i.name) {
            return Err(bad(format!("{}: missing input {:?}", spec.id, i.name)));
        }
    }
    for (name, t) in &case.inputs {
        let ispec = spec.input(name).ok_or_else(|| {
            bad(format!(
                "{}: unknown input {name:?} (inputs: {})",
                spec.id,
                spec.input_names()
            ))
        })?;
        let ok = match (ispec.kind, t.dtype) {
            (InputKind::Float(_), TensorDtype::Float(d)) => d == case.dtype,
            (InputKind::ClassIdOrSoft, TensorDtype::Float(d)) => d == case.dtype,
            (InputKind::Float(_), TensorDtype::I64) => false,
            (_, TensorDtype::I64) => true,
            (_, TensorDtype::Float(_)) => false,
        };
        if !ok {
            return Err(bad(format!(
                "input {name}: dtype {} where {} is expected",
                t.dtype.name(),
                if ispec.kind.is_integer() && ispec.kind != InputKind::ClassIdOrSoft {
                    "i64".to_string()
                } else {
                    case.dtype.name().to_string()
                }
            )));
        }
        if t.len() != t.numel() {
            return Err(bad(format!(
                "input {name}: shape {:?} holds {} elements but data has {}",
                t.shape,
                t.numel(),
                t.len()
            )));
        }
    }
    for g in &case.grad {
        if !spec.grads.contains(&g.as_str()) {
            return Err(bad(format!(
                "{}: no gradient for {g:?} (differentiable: {})",
                spec.id,
                spec.grads.join(", ")
            )));
        }
    }
    // out_dtype: the input dtype, or f32 (the autocast pattern for 16-bit inputs)
    if case.out_dtype != case.dtype && case.out_dtype != Dtype::F32 {
        return Err(bad(format!(
            "out_dtype {} is neither the input dtype {} nor f32",
            case.out_dtype, case.dtype
        )));
    }
    // params
    for (name, v) in &case.params {
        if name == "reduction" {
            // `Case::reduction` reads anything unparseable as `mean`: reject it here
            match v {
                ParamValue::Str(s) if Reduction::parse(s).is_some() => {}
                _ => {
                    return Err(bad(format!(
                        "param reduction={v} is not none, sum, mean or sequence_mean"
                    )))
                }
            }
            continue;
        }
        let p = spec.param(name).ok_or_else(|| {
            bad(format!(
                "{}: unknown param {name:?} (params: {})",
                spec.id,
                spec.param_names()
            ))
        })?;
        let ok = match (p.kind, v) {
            (ParamKind::Float, ParamValue::Float(x)) => p.domain.contains(*x),
            (ParamKind::OptFloat, ParamValue::Null) => true,
            (ParamKind::OptFloat, ParamValue::Float(x)) => p.domain.contains(*x),
            (ParamKind::Int, ParamValue::Int(i)) => {
                p.domain.contains(*i as f64) || p.domain == ParamDomain::Any
            }
            (ParamKind::Bool, ParamValue::Bool(_)) => true,
            (ParamKind::Choice(c), ParamValue::Str(s)) => c.contains(&s.as_str()),
            _ => false,
        };
        if !ok {
            return Err(bad(format!(
                "param {name}={v} is outside its domain ({} {})",
                p.kind.name(),
                p.domain.describe()
            )));
        }
    }
    // layout
    let (layout, dims, row_shape) = match_layout(spec, case)?;
    let reduction = case.reduction();
    if !spec.reductions().contains(&reduction) {
        return Err(bad(format!(
            "{}: reduction {} is not supported",
            spec.id,
            kind_word(reduction)
        )));
    }
    if reduction == Reduction::SequenceMean && layout.name != "BTC" {
        return Err(bad(
            "reduction sequence_mean needs [B,T,C] logits".to_string()
        ));
    }
    if let Some(&c) = dims.get("C") {
        let n = row_shape.iter().product::<usize>();
        if c == 0 && n != 0 {
            return Err(bad(format!(
                "C = 0 classes with {n} rows (C = 0 only with N = 0)"
            )));
        }
    }
    if let Some(cot) = case.inputs.get("cotangent") {
        let want: Vec<usize> = if reduction == Reduction::None {
            row_shape.clone()
        } else {
            vec![]
        };
        if cot.shape != want {
            return Err(bad(format!(
                "input cotangent: shape {:?}, expected {:?} for reduction {}",
                cot.shape, want, reduction
            )));
        }
    }
    let rows = row_shape.iter().product::<usize>();
    let checked = Checked {
        layout: layout.name,
        dims,
        row_shape,
        rows,
        soft: layout.soft,
    };
    check_values(spec, case, &checked)?;
    Ok(checked)
}

fn match_layout(
    spec: &LossSpec,
    case: &Case,
) -> Result<(&'static Layout, BTreeMap<&'static str, usize>, Vec<usize>), LossError> {
    let mut errors = Vec::new();
    for layout in spec.layouts {
        match try_layout(layout, case) {
            Ok((dims, rows)) => return Ok((layout, dims, rows)),
            Err(e) => errors.push(e),
        }
    }
    Err(LossError::invalid(if errors.len() == 1 {
        errors.pop().unwrap()
    } else {
        format!("shapes fit no layout of {}: {}", spec.id, errors.join("; "))
    }))
}

fn try_layout(
    layout: &'static Layout,
    case: &Case,
) -> Result<(BTreeMap<&'static str, usize>, Vec<usize>), String> {
    let spec = case.spec();
    // soft vs class-id target
    if let Some(t) = case.inputs.get("target") {
        if spec.input("target").map(|i| i.kind) == Some(InputKind::ClassIdOrSoft) {
            let is_float = matches!(t.dtype, TensorDtype::Float(_));
            if is_float != layout.soft {
                return Err(format!(
                    "layout {}: target must be {}",
                    layout.name,
                    if layout.soft {
                        "a float tensor"
                    } else {
                        "i64 class ids"
                    }
                ));
            }
        }
    }
    let mut dims: BTreeMap<&'static str, usize> = BTreeMap::new();
    // elementwise shape: that of the first required input
    let elem_shape: Option<Vec<usize>> = layout
        .dims
        .iter()
        .find(|(_, d)| *d == Dims::Elementwise)
        .and_then(|(n, _)| case.inputs.get(*n))
        .map(|t| t.shape.clone());
    for (name, d) in layout.dims {
        let Some(t) = case.inputs.get(*name) else {
            continue;
        };
        if *name == "cotangent" {
            continue; // checked against the reduction later
        }
        match d {
            Dims::Elementwise => {
                if Some(&t.shape) != elem_shape.as_ref() {
                    return Err(format!(
                        "input {name}: shape {:?} differs from {:?}",
                        t.shape,
                        elem_shape.unwrap_or_default()
                    ));
                }
            }
            Dims::ElementwiseOrLast => {
                let es = elem_shape.clone().unwrap_or_default();
                let last = es.last().copied();
                let ok = t.shape == es || (t.shape.len() == 1 && Some(t.shape[0]) == last);
                if !ok {
                    return Err(format!(
                        "input {name}: shape {:?} is neither {:?} nor [{}]",
                        t.shape,
                        es,
                        last.map(|l| l.to_string()).unwrap_or_default()
                    ));
                }
            }
            Dims::Named(syms) => {
                if t.shape.len() != syms.len() {
                    return Err(format!(
                        "input {name}: shape {:?} is not [{}]",
                        t.shape,
                        syms.join(",")
                    ));
                }
                for (s, &n) in syms.iter().zip(&t.shape) {
                    match dims.get(s) {
                        Some(&m) if m != n => {
                            return Err(format!(
                                "input {name}: dim {s} = {n} but {s} = {m} elsewhere (shape {:?})",
                                t.shape
                            ));
                        }
                        _ => {
                            dims.insert(s, n);
                        }
                    }
                }
            }
        }
    }
    let rows = match layout.rows {
        Dims::Named(syms) => syms
            .iter()
            .map(|s| dims.get(s).copied().unwrap_or(0))
            .collect(),
        _ => elem_shape.unwrap_or_default(),
    };
    Ok((dims, rows))
}

/// The case's `ignore_index`, or the catalogue default when the params omit it; `None` for a
/// loss without one.
pub fn ignore_index(case: &Case) -> Option<i64> {
    match case.params.get("ignore_index") {
        Some(ParamValue::Int(i)) => Some(*i),
        Some(_) => None,
        None => match spec(&case.loss)?.param("ignore_index")?.default {
            Default::Int(i) => Some(i),
            _ => None,
        },
    }
}

/// The rows that validation skips (and that contribute nothing): masked, zero-weight, ignored.
pub fn skipped_rows(case: &Case, rows: usize) -> Vec<bool> {
    let mut skip = vec![false; rows];
    if let Some(m) = case.inputs.get("mask").and_then(Tensor::i) {
        for (s, &v) in skip.iter_mut().zip(m) {
            *s |= v == 0;
        }
    }
    if let Some(w) = case.inputs.get("weight").and_then(Tensor::f) {
        for (s, &v) in skip.iter_mut().zip(w) {
            *s |= v == 0.0;
        }
    }
    let spec = case.spec();
    if matches!(
        spec.input("target").map(|i| i.kind),
        Some(InputKind::ClassId | InputKind::ClassIdOrSoft)
    ) {
        if let (Some(t), Some(ii)) = (
            case.inputs.get("target").and_then(Tensor::i),
            ignore_index(case),
        ) {
            for (s, &v) in skip.iter_mut().zip(t) {
                *s |= v == ii;
            }
        }
    }
    skip
}

/// Is the case a `mean` (or `sequence_mean`) whose denominator is exactly 0 — the empty mean,
/// whose value and gradients are 0 by policy? The denominator is Σ m·w over the rows (every row
/// skipped), or, for class-id `cross_entropy` and `nll`, Σ w_y over the non-ignored rows (so
/// zero class weights at every target make it empty, even where a smoothing term remains); soft
/// targets divide by N.
pub fn is_empty_mean(case: &Case, rows: usize) -> bool {
    if !matches!(case.reduction(), Reduction::Mean | Reduction::SequenceMean) {
        return false;
    }
    let skip = skipped_rows(case, rows);
    let class_id = matches!(case.loss.as_str(), "cross_entropy" | "nll")
        && case.inputs.get("target").and_then(Tensor::i).is_some();
    match (
        class_id,
        case.inputs.get("class_weight").and_then(Tensor::f),
    ) {
        (true, Some(cw)) => {
            let t = case.inputs["target"].i().unwrap_or(&[]);
            (0..rows).all(|i| {
                skip[i] || {
                    let y = t[i];
                    y < 0 || cw.get(y as usize).is_none_or(|&w| w == 0.0)
                }
            })
        }
        _ => skip.iter().all(|&s| s),
    }
}

fn check_values(spec: &LossSpec, case: &Case, checked: &Checked) -> Result<(), LossError> {
    let bad = LossError::invalid;
    // mask and weight first: they decide what is skipped.
    if let Some(m) = case.inputs.get("mask").and_then(Tensor::i) {
        if let Some((k, v)) = m.iter().enumerate().find(|(_, &v)| v != 0 && v != 1) {
            return Err(bad(format!("input mask[{k}]={v} is not 0 or 1")));
        }
    }
    // Weights: finite and >= 0. A per-output weight is not checked where the mask is 0, an
    // elementwise pos_weight not where the position is masked or has weight 0 (a masked
    // position may hold anything); class weights and a broadcast pos_weight belong to every
    // row and are always checked.
    let masked: Vec<bool> = match case.inputs.get("mask").and_then(Tensor::i) {
        Some(m) => m.iter().map(|&v| v == 0).collect(),
        None => vec![false; checked.rows],
    };
    let skip = skipped_rows(case, checked.rows);
    for wname in ["weight", "class_weight", "pos_weight"] {
        if let Some(w) = case.inputs.get(wname).and_then(Tensor::f) {
            let exempt = |k: usize| match wname {
                "weight" => masked.get(k).copied().unwrap_or(false),
                "pos_weight" if w.len() == checked.rows => skip[k],
                _ => false,
            };
            if let Some((k, v)) = w
                .iter()
                .enumerate()
                .find(|&(k, v)| !(exempt(k) || v.is_finite() && *v >= 0.0))
            {
                return Err(bad(format!(
                    "input {wname}[{k}]={v:?} is not a finite value >= 0"
                )));
            }
        }
    }
    let log_target = matches!(case.params.get("log_target"), Some(ParamValue::Bool(true)));
    let ignore_index = ignore_index(case);
    for (name, t) in &case.inputs {
        if matches!(
            name.as_str(),
            "mask" | "weight" | "class_weight" | "pos_weight" | "cotangent"
        ) {
            continue;
        }
        let kind = spec.input(name).unwrap().kind;
        let n = t.len();
        // elements per row for row-aligned inputs
        let per_row = if checked.rows > 0 && n % checked.rows == 0 {
            n / checked.rows
        } else {
            0
        };
        let skipped = |k: usize| per_row > 0 && skip[k / per_row];
        match (kind, &t.data) {
            (_, crate::tensor::Data::F(v)) => {
                let dom = match kind {
                    InputKind::Float(d) => d,
                    _ => Domain::UnitInterval, // soft cross-entropy targets
                };
                for (k, &x) in v.iter().enumerate() {
                    if x.is_nan() || skipped(k) {
                        continue;
                    }
                    let problem = match dom {
                        Domain::Any | Domain::Weight => None,
                        Domain::UnitInterval => {
                            (!(0.0..=1.0).contains(&x)).then_some("outside [0, 1]")
                        }
                        Domain::NonNegative => (x < 0.0).then_some("negative"),
                        Domain::KlTarget if log_target => (x > 0.0)
                            .then_some("> 0 with log_target (a log-probability must be <= 0)"),
                        Domain::KlTarget => (!(0.0..=1.0).contains(&x)).then_some("outside [0, 1]"),
                    };
                    if let Some(what) = problem {
                        return Err(bad(format!("input {name}[{k}]={x:?} is {what}")));
                    }
                }
            }
            (_, crate::tensor::Data::I(v)) => {
                for (k, &x) in v.iter().enumerate() {
                    if skipped(k) {
                        continue;
                    }
                    let ok = match kind {
                        InputKind::ClassId | InputKind::ClassIdOrSoft => {
                            let c = checked.dim("C") as i64;
                            (0..c).contains(&x) || Some(x) == ignore_index
                        }
                        InputKind::Sign => x == 1 || x == -1,
                        InputKind::Binary => x == 0 || x == 1,
                        _ => true,
                    };
                    if !ok {
                        let what = match kind {
                            InputKind::Sign => "not -1 or +1".to_string(),
                            InputKind::Binary => "not 0 or 1".to_string(),
                            _ => format!("out of range for {} classes", checked.dim("C")),
                        };
                        return Err(bad(format!("input {name}[{k}]={x} is {what}")));
                    }
                }
            }
        }
    }
    Ok(())
}
