//! `losscheck-oracles`: MPFR reference implementations of the loss catalogue.
//!
//! Each family module (same names as the kernels: [`regression`], …) computes, at a working
//! precision, a rigorous enclosure [lo, hi] of every exact output (value components and
//! termwise gradients) in extended reals, with interval arithmetic over MPFR with directed
//! rounding ([`ival`]). The driver [`evaluate`] starts at a modest precision and doubles it
//! until every output's enclosure rounds to one value of its dtype (or is exact); an output
//! still undecided at the cap is a `hard_case`, for which both neighbours count as correct.

pub mod classification;
pub mod contrastive;
pub mod fd;
pub mod ival;
pub mod preference;
pub mod probabilistic;
pub mod ranking;
pub mod reduce;
pub mod regression;
pub mod round;

use losscheck_core::{Case, Checked, Dtype, LossError};
use std::collections::BTreeMap;

pub use ival::{Ival, Logistic};

/// First working precision (bits): enough to decide nearly every output of a 16-bit or f32
/// dtype at once; the driver doubles it while some output is undecided.
pub const START_PREC: u32 = 64;
/// Precision cap (bits): an output undecided here is a hard case, for which both neighbours
/// count as correct.
pub const MAX_PREC: u32 = 4096;

/// One exact real result, decided in its dtype.
#[derive(Clone, Debug)]
pub struct Exact {
    /// The enclosure at the final precision. Both NaN when the exact result is undefined
    /// (no limit exists).
    pub enclosure: Ival,
    /// RN_dtype(exact): the correctly rounded result as an exact `f64` (±inf on overflow, NaN
    /// when undefined). For a hard case, the rounding of `lo`.
    pub rounded: f64,
    /// A hard case: RN(lo) ≠ RN(hi) at the precision cap; both values count as correct.
    pub hard: Option<(f64, f64)>,
    /// The conditioning κ = Σ|a_k| / |Σ a_k| of the defining sum (1 where nothing cancels).
    pub kappa: f64,
    /// The dtype `rounded` is in.
    pub dtype: Dtype,
}

impl Exact {
    /// |exact| as an f64 ([`Ival::magnitude`]: the enclosure's |midpoint|, or its max |end| where
    /// it straddles 0 symmetrically; NaN if undefined).
    pub fn magnitude(&self) -> f64 {
        self.enclosure.magnitude()
    }
    pub fn is_nan(&self) -> bool {
        self.enclosure.is_nan()
    }
}

/// One member of a kink group: the component may be any point lo + θ·(hi − lo), θ ∈ [0, 1],
/// with θ shared by every member of the group (coupled inputs stay coupled).
#[derive(Clone, Debug)]
pub struct KinkMember {
    /// The differentiable input this component belongs to.
    pub input: String,
    /// Flat (row-major) index of the component.
    pub index: usize,
    /// The segment's end at θ = 0.
    pub lo: Exact,
    /// The segment's end at θ = 1.
    pub hi: Exact,
}

/// Components whose gradient is a Clarke-set selection at a primitive kink.
#[derive(Clone, Debug)]
pub struct KinkGroup {
    /// Which primitive (e.g. "|r| at 0", "quantile at u = 0").
    pub primitive: &'static str,
    pub members: Vec<KinkMember>,
}

/// The oracle's answer for a case.
#[derive(Clone, Debug)]
pub struct OracleOutput {
    /// Shape of the value ([] when reduced).
    pub value_shape: Vec<usize>,
    /// Value components, decided in the case's `out_dtype`.
    pub value: Vec<Exact>,
    /// Termwise gradients per requested input, decided in the input dtype. At a kink this is
    /// the selection nearest 0 (the built-in kernels' choice); the full set is in `kinks`.
    pub grads: BTreeMap<String, Vec<Exact>>,
    pub grad_shapes: BTreeMap<String, Vec<usize>>,
    pub kinks: Vec<KinkGroup>,
    /// The precision (bits) at which every output was decided (or the cap).
    pub precision: u32,
    pub checked: Checked,
}

/// Enclosures at one working precision, before rounding: what a family function returns.
#[derive(Clone, Debug, Default)]
pub struct Raw {
    /// Value components (one per row for `none`, one otherwise).
    pub value: Vec<Ival>,
    /// κ per value component (empty: all 1).
    pub kappa: Vec<f64>,
    /// Termwise gradient components per requested input (the nearest-0 selection at kinks).
    pub grads: BTreeMap<String, Vec<Ival>>,
    /// κ per gradient component where its defining sum can cancel (absent or empty: all 1).
    pub grad_kappa: BTreeMap<String, Vec<f64>>,
    /// The Clarke segments of the components at kinks.
    pub kinks: Vec<RawKinkGroup>,
}

#[derive(Clone, Debug)]
pub struct RawKinkGroup {
    /// Which primitive is at its kink (e.g. "|r| at 0").
    pub primitive: &'static str,
    /// (input, index, lo, hi)
    pub members: Vec<(String, usize, Ival, Ival)>,
}

/// Float inputs of a case as enclosures (point intervals for exact inputs; perturbed reals
/// for finite-difference checks).
pub type Inputs = BTreeMap<String, Vec<Ival>>;

/// Evaluate a case exactly: validate, compute at increasing precision, round each output.
pub fn evaluate(case: &Case) -> Result<OracleOutput, LossError> {
    let checked = losscheck_core::validate(case)?;
    let mut prec = START_PREC;
    loop {
        let inputs = point_inputs(case, prec);
        let raw = eval_raw(case, &checked, &inputs, prec)?;
        let at_cap = prec >= MAX_PREC;
        if let Some(out) = decide(case, &checked, raw, prec, at_cap) {
            return Ok(out);
        }
        prec *= 2;
    }
}

/// The float inputs of a case as point enclosures at `prec` bits (exact: every dtype value fits).
pub fn point_inputs(case: &Case, prec: u32) -> Inputs {
    case.inputs
        .iter()
        .filter_map(|(k, t)| {
            t.f()
                .map(|v| (k.clone(), v.iter().map(|&x| Ival::point(prec, x)).collect()))
        })
        .collect()
}

/// Dispatch to the family function of the case's loss at one working precision.
pub fn eval_raw(
    case: &Case,
    checked: &Checked,
    inputs: &Inputs,
    prec: u32,
) -> Result<Raw, LossError> {
    match case.spec().family {
        losscheck_core::catalogue::Family::Regression => {
            regression::eval(case, checked, inputs, prec)
        }
        losscheck_core::catalogue::Family::Classification => {
            classification::eval(case, checked, inputs, prec)
        }
        losscheck_core::catalogue::Family::Ranking => ranking::eval(case, checked, inputs, prec),
        losscheck_core::catalogue::Family::Preference => {
            preference::eval(case, checked, inputs, prec)
        }
        losscheck_core::catalogue::Family::Probabilistic => {
            probabilistic::eval(case, checked, inputs, prec)
        }
        losscheck_core::catalogue::Family::Contrastive => {
            contrastive::eval(case, checked, inputs, prec)
        }
    }
}

/// Round every output; `None` if some output is undecided and the cap is not reached. The
/// enclosures are moved into the answer, not copied.
fn decide(
    case: &Case,
    checked: &Checked,
    raw: Raw,
    prec: u32,
    at_cap: bool,
) -> Option<OracleOutput> {
    let decide_one = |iv: Ival, dtype: Dtype, kappa: f64| -> Option<Exact> {
        match round::round_enclosure(&iv, dtype) {
            round::Decided::One(x) => Some(Exact {
                enclosure: iv,
                rounded: x,
                hard: None,
                kappa,
                dtype,
            }),
            round::Decided::Two(a, b) => {
                if at_cap {
                    Some(Exact {
                        enclosure: iv,
                        rounded: a,
                        hard: Some((a, b)),
                        kappa,
                        dtype,
                    })
                } else {
                    None
                }
            }
        }
    };
    let Raw {
        value: raw_value,
        kappa: raw_kappa,
        grads: raw_grads,
        grad_kappa: raw_grad_kappa,
        kinks: raw_kinks,
    } = raw;
    let mut value = Vec::with_capacity(raw_value.len());
    for (k, iv) in raw_value.into_iter().enumerate() {
        value.push(decide_one(
            iv,
            case.out_dtype,
            raw_kappa.get(k).copied().unwrap_or(1.0),
        )?);
    }
    let mut grads = BTreeMap::new();
    let mut grad_shapes = BTreeMap::new();
    for (name, g) in raw_grads {
        let mut v = Vec::with_capacity(g.len());
        let kap = raw_grad_kappa.get(&name);
        for (k, iv) in g.into_iter().enumerate() {
            let kappa = kap.and_then(|x| x.get(k)).copied().unwrap_or(1.0);
            v.push(decide_one(iv, case.dtype, kappa)?);
        }
        grad_shapes.insert(name.clone(), case.inputs[&name].shape.clone());
        grads.insert(name, v);
    }
    let mut kinks = Vec::new();
    for kg in raw_kinks {
        let mut members = Vec::new();
        for (input, index, lo, hi) in kg.members {
            members.push(KinkMember {
                input,
                index,
                lo: decide_one(lo, case.dtype, 1.0)?,
                hi: decide_one(hi, case.dtype, 1.0)?,
            });
        }
        kinks.push(KinkGroup {
            primitive: kg.primitive,
            members,
        });
    }
    let value_shape = if case.reduction() == losscheck_core::Reduction::None {
        checked.row_shape.clone()
    } else {
        vec![]
    };
    Some(OracleOutput {
        value_shape,
        value,
        grads,
        grad_shapes,
        kinks,
        precision: prec,
        checked: checked.clone(),
    })
}
