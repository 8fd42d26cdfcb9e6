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

/// Round one enclosure to `dtype`: `None` when its ends round apart and the cap is not reached
/// (at the cap: a hard case, both neighbours recorded).
fn decide_exact(iv: Ival, dtype: Dtype, kappa: f64, at_cap: bool) -> Option<Exact> {
    match round::round_enclosure(&iv, dtype) {
        round::Decided::One(x) => Some(Exact {
            enclosure: iv,
            rounded: x,
            hard: None,
            kappa,
            dtype,
        }),
        round::Decided::Two(a, b) => at_cap.then_some(Exact {
            enclosure: iv,
            rounded: a,
            hard: Some((a, b)),
            kappa,
            dtype,
        }),
    }
}

/// One element's kink group before rounding: the primitive and its (input, lo, hi) members.
type ElementKinks = (&'static str, Vec<(String, Ival, Ival)>);

/// [`evaluate`] for an elementwise case with reduction `none` (every input tensor one value
/// per element), re-evaluating at the doubled precision **only the elements** some output of
/// which is still undecided, instead of the whole case: the same answer (correct rounding is
/// unique; a hard case is one at the cap either way), much faster on large cases with a few
/// hard elements. `precision` is the highest precision any element needed. Other cases go to
/// [`evaluate`].
pub fn evaluate_elementwise(case: &Case) -> Result<OracleOutput, LossError> {
    let checked = losscheck_core::validate(case)?;
    let n = checked.rows;
    let elementwise = case.spec().structure == losscheck_core::catalogue::Structure::Elementwise
        && case.reduction() == losscheck_core::Reduction::None
        && case.inputs.values().all(|t| t.len() == n);
    if !elementwise || n <= 1 {
        return evaluate(case);
    }
    let mut value: Vec<Option<Exact>> = vec![None; n];
    let mut grads: BTreeMap<String, Vec<Option<Exact>>> = BTreeMap::new();
    let mut kinks: Vec<(usize, KinkGroup)> = Vec::new();
    let mut pending: Vec<usize> = (0..n).collect();
    let mut prec = START_PREC;
    let mut top = START_PREC;
    while !pending.is_empty() {
        // the case restricted to the pending elements
        let mut sub = case.clone();
        for t in sub.inputs.values_mut() {
            match &mut t.data {
                losscheck_core::Data::F(v) => *v = pending.iter().map(|&k| v[k]).collect(),
                losscheck_core::Data::I(v) => *v = pending.iter().map(|&k| v[k]).collect(),
            }
            t.shape = vec![pending.len()];
        }
        let sub_checked = losscheck_core::validate(&sub)?;
        let raw = eval_raw(&sub, &sub_checked, &point_inputs(&sub, prec), prec)?;
        let at_cap = prec >= MAX_PREC;
        let mut raw_kinks: Vec<Vec<ElementKinks>> = vec![Vec::new(); pending.len()];
        for kg in raw.kinks {
            let j = kg.members.first().map(|m| m.1).unwrap_or(0);
            let members = kg
                .members
                .into_iter()
                .map(|(i, _, lo, hi)| (i, lo, hi))
                .collect();
            raw_kinks[j].push((kg.primitive, members));
        }
        let mut raw_grads: BTreeMap<String, Vec<Ival>> = raw.grads;
        let mut values = raw.value.into_iter();
        let mut still = Vec::new();
        for (j, &k) in pending.iter().enumerate() {
            let v = values.next().expect("one value per element");
            let kappa = |ks: Option<&Vec<f64>>| ks.and_then(|x| x.get(j)).copied().unwrap_or(1.0);
            let dv = decide_exact(v, case.out_dtype, kappa(Some(&raw.kappa)), at_cap);
            let mut dg = Vec::new();
            for (name, g) in raw_grads.iter_mut() {
                let iv = std::mem::replace(&mut g[j], Ival::zero(2));
                dg.push((
                    name.clone(),
                    decide_exact(iv, case.dtype, kappa(raw.grad_kappa.get(name)), at_cap),
                ));
            }
            let mut dk = Vec::new();
            for (prim, members) in std::mem::take(&mut raw_kinks[j]) {
                let mut ms = Vec::new();
                for (input, lo, hi) in members {
                    ms.push((
                        input,
                        decide_exact(lo, case.dtype, 1.0, at_cap),
                        decide_exact(hi, case.dtype, 1.0, at_cap),
                    ));
                }
                dk.push((prim, ms));
            }
            let decided = dv.is_some()
                && dg.iter().all(|g| g.1.is_some())
                && dk
                    .iter()
                    .all(|(_, ms)| ms.iter().all(|m| m.1.is_some() && m.2.is_some()));
            if !decided {
                still.push(k);
                continue;
            }
            top = top.max(prec);
            value[k] = dv;
            for (name, e) in dg {
                grads.entry(name).or_insert_with(|| vec![None; n])[k] = e;
            }
            for (primitive, ms) in dk {
                let members = ms
                    .into_iter()
                    .map(|(input, lo, hi)| KinkMember {
                        input,
                        index: k,
                        lo: lo.unwrap(),
                        hi: hi.unwrap(),
                    })
                    .collect();
                kinks.push((k, KinkGroup { primitive, members }));
            }
        }
        pending = still;
        prec *= 2;
    }
    kinks.sort_by_key(|g| g.0);
    let mut grad_shapes = BTreeMap::new();
    let grads = grads
        .into_iter()
        .map(|(name, v)| {
            grad_shapes.insert(name.clone(), case.inputs[&name].shape.clone());
            (name, v.into_iter().map(|e| e.expect("decided")).collect())
        })
        .collect();
    Ok(OracleOutput {
        value_shape: checked.row_shape.clone(),
        value: value.into_iter().map(|e| e.expect("decided")).collect(),
        grads,
        grad_shapes,
        kinks: kinks.into_iter().map(|g| g.1).collect(),
        precision: top,
        checked,
    })
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
    let decide_one = |iv: Ival, dtype: Dtype, kappa: f64| decide_exact(iv, dtype, kappa, at_cap);
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
