//! Generators of the contrastive losses: `contrastive`, `triplet`, `info_nce` (inputs [N, D]).
//!
//! A case is a [`Frame`] (N, D, reduction, out dtype, grads, params, mask and weight plans,
//! cotangent, the styles its vectors are drawn from) drawn first, then its rows ([`Row`]: one
//! vector per input, each in a [`Style`], a relation between them, the row's mask, weight,
//! cotangent and target draws), realized into a [`Case`]. What the rows reach:
//!
//! - styles: typical (N(0, 4^k)), **zero vectors**, **tiny norms** (subnormal components),
//!   **huge norms** whose squares overflow the 16-bit dtypes (components ≈ 256, and the
//!   square-overflow edge of each dtype), the edge palette, bit-uniform components, small
//!   integer vectors with integer norms ((3, 4), (5, 12), (1, 2, 2), …);
//! - relations: independent; **identical** anchor/positive, anchor/negative or x1/x2 (and
//!   query/key); a few ulps apart; **colinear** (a power-of-2 multiple of the other, either
//!   sign); `triplet` with eps: positive = anchor + eps where exact;
//! - **D = 1**, D = 0, N = 0, N = 1; D up to 64 and long batches (N 2^11 for `triplet` and
//!   `contrastive`, 64–128 for `info_nce`) as a small share;
//! - params over their domains: margins at 0, ±, tiny, huge and **at the kinks** (the kinks
//!   regime: integer vectors whose norms make `triplet`'s z = 0 and `contrastive`'s d = m
//!   exactly; ‖x‖ = eps exactly for `info_nce`); eps 0, PyTorch's 1e−6 and over its domain;
//!   **temperatures down to 1e−4**, `normalize` and `symmetric` both ways; `info_nce` batches
//!   all along one axis (colinear) and with tied keys.
//!
//! Masked rows (and zero-weight rows of `triplet` / `contrastive`) hold poison; an
//! `info_nce` row with weight 0 keeps its query and key in the others' softmax, so it holds
//! data. A NaN sometimes sits in a valid row of `triplet` / `contrastive` (propagation).
//! Unnormalized `info_nce` logits are kept to |q|·|k|/τ ≤ about 2^20 (see
//! docs/policies/contrastive.md: the f64 similarity's error grows with it).

use super::values::{self, nudge, square_overflow_edge};
use super::Regime;
use losscheck_core::dtype::pow2;
use losscheck_core::{catalogue, Case, Dtype, ParamValue, Reduction, Tensor};
use proptest::prelude::*;
use proptest::sample::{select, Index};

/// The losses with generators here.
pub const LOSSES: [&str; 3] = ["contrastive", "triplet", "info_nce"];

/// Regimes and weights (per mille).
pub const REGIMES: &[(Regime, u32)] = &[
    (Regime::Typical, 250),
    (Regime::BitUniform, 70),
    (Regime::Extreme, 230),
    (Regime::Masked, 100),
    (Regime::Weighted, 100),
    (Regime::Shapes, 70),
    (Regime::Kinks, 178),
    (Regime::LongBatch, 2),
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Contrastive,
    Triplet,
    InfoNce,
}

fn kind(loss: &str) -> Kind {
    match loss {
        "contrastive" => Kind::Contrastive,
        "triplet" => Kind::Triplet,
        "info_nce" => Kind::InfoNce,
        _ => panic!("no contrastive generators for {loss}"),
    }
}

fn names(k: Kind) -> &'static [&'static str] {
    match k {
        Kind::Contrastive => &["x1", "x2"],
        Kind::Triplet => &["anchor", "positive", "negative"],
        Kind::InfoNce => &["query", "key"],
    }
}

/// How a vector's components are drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    Typical,
    Zero,
    Tiny,
    Huge,
    Edge,
    BitUniform,
    Int,
}

/// How the other inputs of a row relate to the first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Relation {
    Independent,
    /// Input k equals input 0 (k from the row's index draw).
    Same,
    /// Input k is input 0 nudged by a few ulps per component.
    Near,
    /// Input k is ±2^j times input 0.
    Colinear,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MaskPlan {
    Absent,
    Random,
    All,
    None,
    OneValid,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WeightPlan {
    Absent,
    Typical,
    Edge,
    AllZero,
}

/// Everything about a case but its rows.
#[derive(Clone, Debug)]
pub struct Frame {
    pub n: usize,
    pub d: usize,
    pub reduction: Reduction,
    pub out_f32: bool,
    pub grads: [bool; 3],
    pub margin: f64,
    pub eps: f64,
    pub tau: f64,
    pub normalize: bool,
    pub symmetric: bool,
    pub mask: MaskPlan,
    pub weight: WeightPlan,
    pub cotangent: Option<f64>,
    pub styles: Vec<Style>,
    pub relations: Vec<Relation>,
    /// info_nce: every vector along this axis.
    pub axis: Option<Index>,
    /// Kinks regime: build rows at the kinks.
    pub kinks: bool,
    /// A NaN in a (possibly valid) row: (row, component).
    pub nan_at: Option<(Index, Index)>,
    pub one_valid: Index,
}

/// One row's draws.
#[derive(Clone, Debug)]
pub struct Row {
    pub vecs: Vec<Vec<f64>>,
    pub styles: Vec<Index>,
    pub relation: Index,
    pub which: Index,
    pub shift: i32,
    pub neg: bool,
    pub keep: bool,
    pub weight: f64,
    pub cot: f64,
    pub target: bool,
    pub poison: Vec<f64>,
    pub int_a: Index,
    pub int_b: Index,
    pub perm: Index,
    pub scale: i32,
}

/// Small integer vectors with integer norms: (vector, norm).
const INT_VECS: &[(&[f64], f64)] = &[
    (&[1.0], 1.0),
    (&[3.0, 4.0], 5.0),
    (&[5.0, 12.0], 13.0),
    (&[1.0, 2.0, 2.0], 3.0),
    (&[2.0, 3.0, 6.0], 7.0),
    (&[8.0, 15.0], 17.0),
    (&[1.0, 4.0, 8.0], 9.0),
    (&[2.0, 6.0, 9.0], 11.0),
    (&[2.0], 2.0),
    (&[1.0, 1.0, 1.0, 1.0], 2.0),
];

fn vec_of(dtype: Dtype, d: usize, style: Style) -> BoxedStrategy<Vec<f64>> {
    let comp: BoxedStrategy<f64> = match style {
        Style::Typical => (values::normal(), -2i32..=3)
            .prop_map(move |(z, k)| dtype.round(z * pow2(k)))
            .boxed(),
        Style::Zero => Just(0.0).boxed(),
        Style::Tiny => prop_oneof![
            4 => (values::subnormal(dtype), any::<bool>()).prop_map(|(x, s)| if s { -x } else { x }),
            1 => Just(dtype.min_subnormal()),
            1 => Just(0.0),
        ]
        .boxed(),
        Style::Huge => {
            let edge = square_overflow_edge(dtype);
            prop_oneof![
                3 => (0i64..64, any::<bool>()).prop_map(move |(j, s)| {
                    let x = dtype.round(256.0 * (1.0 + j as f64 / 64.0));
                    if s { -x } else { x }
                }),
                2 => (-3i64..=3, any::<bool>()).prop_map(move |(j, s)| {
                    let x = nudge(dtype, edge, j);
                    if s { -x } else { x }
                }),
            ]
            .boxed()
        }
        Style::Edge => values::edge(dtype),
        Style::BitUniform => values::bit_uniform(dtype),
        Style::Int => (-6i32..=6).prop_map(|k| k as f64).boxed(),
    };
    proptest::collection::vec(comp, d).boxed()
}

fn row_strategy(fr: &Frame, dtype: Dtype, k: usize) -> BoxedStrategy<Row> {
    let d = fr.d;
    let styles = fr.styles.clone();
    let vecs: Vec<BoxedStrategy<Vec<f64>>> = (0..k)
        .map(|_| {
            let st = styles.clone();
            (0..st.len())
                .prop_flat_map(move |i| vec_of(dtype, d, st[i]))
                .boxed()
        })
        .collect();
    let weight = match fr.weight {
        WeightPlan::Edge => values::edge_weight(dtype),
        _ => values::typical_weight(dtype),
    };
    (
        vecs,
        (
            proptest::collection::vec(any::<Index>(), k),
            any::<Index>(),
            any::<Index>(),
            -3i32..=3,
            any::<bool>(),
            proptest::bool::weighted(0.7),
        ),
        (
            weight,
            values::typical_cotangent(dtype),
            any::<bool>(),
            proptest::collection::vec(values::poison(dtype), k),
            any::<Index>(),
            any::<Index>(),
            any::<Index>(),
            -4i32..=4,
        ),
    )
        .prop_map(
            |(
                vecs,
                (styles, relation, which, shift, neg, keep),
                (weight, cot, target, poison, int_a, int_b, perm, scale),
            )| Row {
                vecs,
                styles,
                relation,
                which,
                shift,
                neg,
                keep,
                weight,
                cot,
                target,
                poison,
                int_a,
                int_b,
                perm,
                scale,
            },
        )
        .boxed()
}

/// An integer vector with integer norm, padded / cut to d, permuted, signs from `perm`,
/// scaled by 2^scale: (vector, norm) — exact in every dtype.
fn int_vec(d: usize, ix: &Index, perm: &Index, scale: i32) -> (Vec<f64>, f64) {
    let fits: Vec<&(&[f64], f64)> = INT_VECS.iter().filter(|(v, _)| v.len() <= d).collect();
    if fits.is_empty() {
        return (vec![0.0; d], 0.0);
    }
    let (v, nrm) = fits[ix.index(fits.len())];
    let mut out = vec![0.0; d];
    let p = perm.index(1 << 16);
    let off = p % d;
    for (j, &x) in v.iter().enumerate() {
        let neg = (p >> (j + 4)) & 1 == 1;
        out[(j + off) % d] = if neg { -x } else { x } * pow2(scale);
    }
    (out, nrm * pow2(scale))
}

fn relate(dtype: Dtype, base: &[f64], row: &Row, rel: Relation) -> Option<Vec<f64>> {
    match rel {
        Relation::Independent => None,
        Relation::Same => Some(base.to_vec()),
        Relation::Near => Some(
            base.iter()
                .enumerate()
                .map(|(j, &x)| nudge(dtype, x, ((row.shift as i64 + j as i64) % 4) - 1))
                .collect(),
        ),
        Relation::Colinear => {
            let s = pow2(row.shift) * if row.neg { -1.0 } else { 1.0 };
            let v: Vec<f64> = base.iter().map(|&x| dtype.round(x * s)).collect();
            // keep exact multiples only (no overflow or underflow on the way)
            if v.iter().zip(base).all(|(&y, &x)| y == x * s) {
                Some(v)
            } else {
                Some(base.to_vec())
            }
        }
    }
}

pub fn realize(loss: &str, dtype: Dtype, fr: &Frame, rows: Vec<Row>) -> Case {
    let k = kind(loss);
    let nm = names(k);
    let (n, d) = (rows.len(), fr.d);
    let mut case = Case::new(loss, dtype).expect("a catalogue loss");
    case.set_reduction(fr.reduction);
    if dtype.is_16bit() && fr.out_f32 {
        case.out_dtype = Dtype::F32;
    }
    let mut margin = fr.margin;
    let mut eps = fr.eps;
    match k {
        Kind::Contrastive => {}
        Kind::Triplet => {}
        Kind::InfoNce => {
            case.params
                .insert("temperature".into(), ParamValue::Float(fr.tau));
            case.params
                .insert("normalize".into(), ParamValue::Bool(fr.normalize));
            case.params
                .insert("symmetric".into(), ParamValue::Bool(fr.symmetric));
        }
    }
    case.grad = nm
        .iter()
        .enumerate()
        .filter(|(j, _)| fr.grads[*j])
        .map(|(_, s)| s.to_string())
        .collect();
    // activity
    let mut keep: Vec<bool> = match fr.mask {
        MaskPlan::Absent | MaskPlan::None => vec![true; n],
        MaskPlan::Random => rows.iter().map(|r| r.keep).collect(),
        MaskPlan::All => vec![false; n],
        MaskPlan::OneValid => {
            let j = if n == 0 { 0 } else { fr.one_valid.index(n) };
            (0..n).map(|i| i == j).collect()
        }
    };
    let weights: Option<Vec<f64>> = match fr.weight {
        WeightPlan::Absent => None,
        WeightPlan::AllZero => Some(vec![0.0; n]),
        _ => Some(rows.iter().map(|r| dtype.round(r.weight)).collect()),
    };
    // poison where a row is skipped (info_nce: masked only)
    let skipped: Vec<bool> = (0..n)
        .map(|i| !keep[i] || (k != Kind::InfoNce && weights.as_ref().is_some_and(|w| w[i] == 0.0)))
        .collect();
    let mut data: Vec<Vec<f64>> = vec![Vec::with_capacity(n * d); nm.len()];
    let mut targets = Vec::with_capacity(n);
    let mut kink_margin: Option<f64> = None;
    let mut kink_eps: Option<f64> = None;
    for (i, row) in rows.iter().enumerate() {
        let mut vs: Vec<Vec<f64>> = row.vecs.clone();
        if let (Some(ax), Kind::InfoNce) = (&fr.axis, k) {
            let a = ax.index(d.max(1));
            for v in vs.iter_mut() {
                let s = v.iter().copied().find(|x| *x != 0.0).unwrap_or(0.0);
                v.iter_mut().for_each(|x| *x = 0.0);
                if d > 0 {
                    v[a] = s;
                }
            }
        }
        let rel = fr.relations[row.relation.index(fr.relations.len())];
        if nm.len() > 1 && !fr.kinks {
            let target = 1 + row.which.index(nm.len() - 1);
            if let Some(v) = relate(dtype, &vs[0], row, rel) {
                vs[target] = v;
                if k == Kind::Triplet && rel == Relation::Same && eps > 0.0 {
                    // positive = anchor + eps exactly where it is exact: u = 0
                    let w: Vec<f64> = vs[0].iter().map(|&x| dtype.round(x + eps)).collect();
                    if w.iter().zip(&vs[0]).all(|(&y, &x)| y - x == eps) {
                        vs[target] = w;
                    }
                }
            }
        }
        if fr.kinks && d > 0 {
            let (u, nu) = int_vec(d, &row.int_a, &row.perm, row.scale);
            let (v, nv) = int_vec(d, &row.int_b, &row.int_a, row.scale);
            match k {
                Kind::Triplet => {
                    // a integer, p = a − u, n = a − v: z = |u| − |v| + m; m = |v| − |u|
                    // (the first valid row decides m; the others land near or at it)
                    let a: Vec<f64> = vs[0].iter().map(|x| x.round()).collect();
                    let u = if row.target { vec![0.0; d] } else { u };
                    let nu = if row.target { 0.0 } else { nu };
                    vs[1] = a.iter().zip(&u).map(|(x, y)| x - y).collect();
                    vs[2] = a.iter().zip(&v).map(|(x, y)| x - y).collect();
                    vs[0] = a;
                    if kink_margin.is_none() && !skipped[i] {
                        kink_margin = Some(nv - nu);
                    }
                }
                Kind::Contrastive => {
                    let a: Vec<f64> = vs[0].iter().map(|x| x.round()).collect();
                    let u = if row.neg { vec![0.0; d] } else { u };
                    vs[1] = a.iter().zip(&u).map(|(x, y)| x - y).collect();
                    vs[0] = a;
                    if kink_margin.is_none() && !skipped[i] && !row.neg {
                        kink_margin = Some(nu);
                    }
                }
                Kind::InfoNce => {
                    // ‖q‖ = eps exactly for the first valid row, zero keys sometimes
                    if kink_eps.is_none() && !skipped[i] && nu > 0.0 {
                        let e = Dtype::F32.round(nu * pow2(-20));
                        if e == nu * pow2(-20) {
                            kink_eps = Some(e);
                            vs[0] = u.iter().map(|x| dtype.round(x * pow2(-20))).collect();
                        }
                    }
                    if row.neg {
                        vs[1] = vec![0.0; d];
                    }
                }
            }
        }
        if let Some((r, c)) = &fr.nan_at {
            if n > 0 && d > 0 && r.index(n) == i && k != Kind::InfoNce {
                let j = c.index(d * nm.len());
                vs[j / d][j % d] = f64::NAN;
            }
        }
        for (j, v) in vs.iter().enumerate() {
            if skipped[i] {
                let p = row.poison[j];
                data[j].extend((0..d).map(|c| if c % 2 == 0 { p } else { dtype.round(v[c]) }));
            } else {
                data[j].extend(v.iter().map(|&x| dtype.round(x)));
            }
        }
        targets.push(if skipped[i] && row.target {
            7
        } else {
            row.target as i64
        });
    }
    if let Some(m) = kink_margin {
        margin = Dtype::F32.round(m);
    }
    if let Some(e) = kink_eps {
        eps = e;
    }
    match k {
        Kind::Contrastive => {
            case.params
                .insert("margin".into(), ParamValue::Float(margin));
        }
        Kind::Triplet => {
            case.params
                .insert("margin".into(), ParamValue::Float(margin));
            case.params.insert(
                "eps".into(),
                ParamValue::Float(if fr.kinks { 0.0 } else { eps }),
            );
        }
        Kind::InfoNce => {
            case.params.insert("eps".into(), ParamValue::Float(eps));
        }
    }
    for (j, name) in nm.iter().enumerate() {
        case.inputs.insert(
            name.to_string(),
            Tensor::float(dtype, vec![n, d], std::mem::take(&mut data[j])),
        );
    }
    if k == Kind::Contrastive {
        case.inputs
            .insert("target".into(), Tensor::int(vec![n], targets));
    }
    if let Some(w) = weights {
        case.inputs
            .insert("weight".into(), Tensor::float(dtype, vec![n], w));
    }
    if fr.mask != MaskPlan::Absent {
        if fr.mask == MaskPlan::None {
            keep = vec![true; n];
        }
        case.inputs.insert(
            "mask".into(),
            Tensor::int(vec![n], keep.iter().map(|&a| a as i64).collect()),
        );
    }
    if let Some(cot) = fr.cotangent {
        let t = if fr.reduction == Reduction::None {
            Tensor::float(
                dtype,
                vec![n],
                rows.iter().map(|r| dtype.round(r.cot)).collect(),
            )
        } else {
            Tensor::scalar(dtype, dtype.round(cot))
        };
        case.inputs.insert("cotangent".into(), t);
    }
    case
}

// ---- frames by regime

fn margin_strategy(dtype: Dtype) -> BoxedStrategy<f64> {
    let spec = catalogue::spec("triplet").unwrap().param("margin").unwrap();
    prop_oneof![
        4 => select(vec![1.0, 0.0, 0.5, 2.0, -0.5, 0.25, 4.0, 1e-3, 10.0]).prop_map(|m| Dtype::F32.round(m)),
        2 => (values::normal(), -3i32..=3).prop_map(|(z, k)| Dtype::F32.round(z * pow2(k))),
        1 => values::param(spec, dtype).prop_map(|p| match p {
            ParamValue::Float(x) => x,
            _ => 1.0,
        }),
    ]
    .boxed()
}

fn eps_strategy(dtype: Dtype) -> BoxedStrategy<f64> {
    let spec = catalogue::spec("triplet").unwrap().param("eps").unwrap();
    prop_oneof![
        4 => Just(0.0),
        2 => Just(Dtype::F32.round(1e-6)),
        1 => (-24i32..=0).prop_map(pow2),
        1 => values::param(spec, dtype).prop_map(|p| match p {
            ParamValue::Float(x) => x,
            _ => 0.0,
        }),
    ]
    .boxed()
}

fn nce_eps_strategy() -> BoxedStrategy<f64> {
    prop_oneof![
        4 => Just(1e-12),
        2 => Just(Dtype::F32.round(1e-8)),
        1 => Just(Dtype::F32.round(1e-6)),
        1 => (-40i32..=-1).prop_map(pow2),
        1 => Just(Dtype::F32.round(0.5)),
    ]
    .prop_map(|e| Dtype::F32.round(e))
    .boxed()
}

fn tau_strategy() -> BoxedStrategy<f64> {
    prop_oneof![
        3 => Just(0.07),
        2 => select(vec![1.0, 0.5, 0.1, 0.05, 0.01, 1e-3, 1e-4, 2.0, 10.0]),
        2 => (-4.0f64..1.0).prop_map(|e| libm::pow(10.0, e)),
        1 => Just(1e-4),
    ]
    .prop_map(|t| Dtype::F32.round(t))
    .boxed()
}

fn styles_of(r: Regime) -> Vec<Style> {
    use Style::*;
    match r {
        Regime::Typical | Regime::Masked | Regime::Weighted | Regime::LongBatch => {
            vec![Typical, Typical, Typical, Zero, Int]
        }
        Regime::BitUniform => vec![BitUniform],
        Regime::Extreme => vec![Typical, Zero, Tiny, Huge, Edge, BitUniform],
        Regime::Shapes => vec![Typical, Zero, Tiny],
        Regime::Kinks => vec![Int, Typical, Zero],
    }
}

/// Some(x) one time in ten when `on`, else always None.
fn maybe_some<T: std::fmt::Debug + Clone + 'static>(
    on: bool,
    s: BoxedStrategy<T>,
) -> BoxedStrategy<Option<T>> {
    if on {
        proptest::option::weighted(0.1, s).boxed()
    } else {
        Just(None).boxed()
    }
}

fn frame(k: Kind, dtype: Dtype, r: Regime) -> BoxedStrategy<Frame> {
    let (n_range, d_range): ((usize, usize), (usize, usize)) = match r {
        Regime::Shapes => ((0, 3), (0, 2)),
        Regime::LongBatch if k == Kind::InfoNce => ((64, 128), (2, 4)),
        Regime::LongBatch => ((2048, 2600), (1, 4)),
        Regime::Kinks => ((1, 6), (1, 6)),
        _ => ((1, 8), (1, 16)),
    };
    let wide = r == Regime::Typical || r == Regime::Extreme;
    let d_strategy = if wide {
        prop_oneof![
            8 => d_range.0..=d_range.1,
            1 => Just(1usize),
            1 => 17usize..=64,
        ]
        .boxed()
    } else {
        prop_oneof![
            8 => d_range.0..=d_range.1,
            1 => Just(1usize.max(d_range.0).min(d_range.1)),
        ]
        .boxed()
    };
    let dims = (n_range.0..=n_range.1, d_strategy);
    let mask = match r {
        Regime::Masked => prop_oneof![
            2 => Just(MaskPlan::Random),
            1 => Just(MaskPlan::All),
            1 => Just(MaskPlan::OneValid),
            1 => Just(MaskPlan::None),
        ]
        .boxed(),
        Regime::Shapes | Regime::Extreme => prop_oneof![
            4 => Just(MaskPlan::Absent),
            1 => Just(MaskPlan::Random),
        ]
        .boxed(),
        _ => prop_oneof![6 => Just(MaskPlan::Absent), 1 => Just(MaskPlan::Random)].boxed(),
    };
    let weight = match r {
        Regime::Weighted => prop_oneof![
            2 => Just(WeightPlan::Typical),
            2 => Just(WeightPlan::Edge),
            1 => Just(WeightPlan::AllZero),
        ]
        .boxed(),
        _ => prop_oneof![6 => Just(WeightPlan::Absent), 1 => Just(WeightPlan::Typical)].boxed(),
    };
    let reduction = select(vec![Reduction::Mean, Reduction::Sum, Reduction::None]);
    let cot = match r {
        Regime::Extreme | Regime::Weighted => {
            proptest::option::weighted(0.5, values::edge_cotangent(dtype)).boxed()
        }
        _ => proptest::option::weighted(0.3, values::typical_cotangent(dtype)).boxed(),
    };
    let relations = match k {
        Kind::InfoNce => vec![
            Relation::Independent,
            Relation::Independent,
            Relation::Same,
            Relation::Near,
            Relation::Colinear,
        ],
        _ => vec![
            Relation::Independent,
            Relation::Same,
            Relation::Near,
            Relation::Colinear,
        ],
    };
    let styles = styles_of(r);
    (
        dims,
        (
            reduction,
            any::<bool>(),
            proptest::collection::vec(proptest::bool::weighted(0.85), 3),
        ),
        (
            margin_strategy(dtype),
            eps_strategy(dtype),
            tau_strategy(),
            nce_eps_strategy(),
        ),
        (proptest::bool::weighted(0.8), any::<bool>()),
        (mask, weight, cot),
        (
            maybe_some(k == Kind::InfoNce, any::<Index>().boxed()),
            maybe_some(
                r == Regime::Extreme && k != Kind::InfoNce,
                (any::<Index>(), any::<Index>()).boxed(),
            ),
            any::<Index>(),
        ),
    )
        .prop_map(
            move |(
                (n, d),
                (reduction, out_f32, g),
                (margin, eps, tau, nce_eps),
                (normalize, symmetric),
                (mask, weight, cotangent),
                (axis, nan_at, one_valid),
            )| {
                let mut styles = styles.clone();
                let mut tau = tau;
                if k == Kind::InfoNce && !normalize {
                    // unnormalized logits |q||k|/τ kept moderate (see the module docs)
                    styles = vec![Style::Typical, Style::Zero, Style::Int];
                    tau = tau.max(0.05);
                }
                Frame {
                    n,
                    d,
                    reduction,
                    out_f32,
                    grads: [g[0], g[1], g[2]],
                    margin,
                    eps: if k == Kind::InfoNce { nce_eps } else { eps },
                    tau,
                    normalize,
                    symmetric,
                    mask,
                    weight,
                    cotangent,
                    styles,
                    relations: relations.clone(),
                    axis,
                    kinks: r == Regime::Kinks,
                    nan_at,
                    one_valid,
                }
            },
        )
        .boxed()
}

/// The strategy of one regime for `loss` in `dtype`.
pub fn strategy(loss: &str, dtype: Dtype, r: Regime) -> BoxedStrategy<Case> {
    let loss: &'static str = catalogue::spec(loss).expect("a catalogue loss").id;
    let k = kind(loss);
    let width = names(k).len();
    frame(k, dtype, r)
        .prop_flat_map(move |fr| {
            let n = fr.n;
            let rows = if r == Regime::LongBatch {
                // a pattern of up to 16 rows, tiled to N
                proptest::collection::vec(row_strategy(&fr, dtype, width), 1..=16)
                    .prop_map(move |p| (0..n).map(|i| p[i % p.len()].clone()).collect())
                    .boxed()
            } else {
                proptest::collection::vec(row_strategy(&fr, dtype, width), n..=n).boxed()
            };
            (Just(fr), rows)
        })
        .prop_map(move |(fr, rows)| realize(loss, dtype, &fr, rows))
        .boxed()
}
