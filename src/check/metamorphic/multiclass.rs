//! Metamorphic relations of the row-wise classification losses (`cross_entropy`, `nll`,
//! `multi_margin`), checked like the elementwise ones (see the parent module) on a subject and
//! on the oracle:
//!
//! - [`logit_shift_is_invariant`]: adding a constant to every logit of a row leaves
//!   cross-entropy unchanged (value and gradient) — the shift is a multiple of the row's largest
//!   ulp, checked exact for every entry;
//! - [`plain_is_smoothing0_unit_weights`]: `label_smoothing = 0` with class weights of ones is
//!   plain cross-entropy (and `nll` with unit class weights is plain `nll`);
//! - [`skipped_rows_are_inert`]: rows appended with an ignored target (`cross_entropy` with class
//!   ids, `nll`) or mask 0 (`multi_margin`), holding anything — NaN, ±inf — change nothing,
//!   bitwise, and their outputs and gradients are 0;
//! - [`rows_concatenate`]: a batch split into two parts combines sums exactly and means by the
//!   parts' denominators (Σ w_y of the non-ignored rows; N for soft targets; Σ m·w for
//!   `multi_margin`);
//! - [`sequence_mean_is_mean_of_sequences`]: on [B,T,C], `sequence_mean` is the plain average of
//!   each sequence's own `mean` over the sequences with a non-zero denominator — what catches
//!   double averaging (a token mean declared as a sequence mean, or the reverse);
//! - [`nll_on_log_softmax_is_cross_entropy`]: `nll` on l = RN(log_softmax(z)) equals
//!   cross-entropy on l up to Σ_i w_{y_i}·LSE(l_i) / D, which is computed (LSE(l) ≈ 0 since l is
//!   nearly normalised): the value only (the gradients of the two losses differ by A·softmax).

use super::{
    check_all_scaled, check_scaled, combine, observe, outputs, same_bits, show, with_case, Held,
    Observed, Outcome, Side, Split,
};
use losscheck_core::catalogue::ignore_index;
use losscheck_core::dtype::pow2;
use losscheck_core::{Case, Data, Dtype, ParamValue, Reduction, Tensor};
use losscheck_oracles::Ival;
use std::collections::BTreeMap;

/// The data input of a row-wise classification case.
fn data_name(case: &Case) -> &'static str {
    case.spec().grads[0]
}

/// (rows, classes) of a case, its data viewed as [rows, C].
fn dims(case: &Case) -> (usize, usize) {
    let t = &case.inputs[data_name(case)];
    let c = *t.shape.last().unwrap_or(&0);
    (if c == 0 { 0 } else { t.len() / c }, c)
}

fn is_soft(case: &Case) -> bool {
    case.inputs
        .get("target")
        .is_some_and(|t| matches!(t.data, Data::F(_)))
}

/// A [B,T,C] case as [B·T, C] (`sequence_mean` becomes the token `mean`: callers that need it
/// keep the original).
fn flatten_rows(case: &Case) -> Case {
    let mut c = case.clone();
    let (n, k) = dims(case);
    let name = data_name(case);
    if case.inputs[name].shape.len() == 3 {
        c.inputs.get_mut(name).unwrap().shape = vec![n, k];
        for key in ["target", "cotangent"] {
            if let Some(t) = c.inputs.get_mut(key) {
                if t.shape.len() == 2 {
                    t.shape = vec![n];
                }
            }
        }
        if c.reduction() == Reduction::SequenceMean {
            c.set_reduction(Reduction::Mean);
        }
    }
    c
}

/// Rows [lo, hi) of an [N, C] case (per-row inputs and a `none` cotangent sliced).
fn rows(case: &Case, lo: usize, hi: usize) -> Case {
    let (n, k) = dims(case);
    let mut c = case.clone();
    let none = case.reduction() == Reduction::None;
    for (name, t) in c.inputs.iter_mut() {
        if name == "class_weight" || (name == "cotangent" && !none) || t.shape.first() != Some(&n) {
            continue;
        }
        let per = if t.shape.len() == 2 { k } else { 1 };
        let mut shape = t.shape.clone();
        shape[0] = hi - lo;
        *t = match &t.data {
            Data::F(v) => Tensor::float(case.dtype, shape, v[lo * per..hi * per].to_vec()),
            Data::I(v) => Tensor::int(shape, v[lo * per..hi * per].to_vec()),
        };
    }
    c
}

/// The mean's denominator of an [N, C] case, exactly: Σ w_y over non-ignored rows (class ids),
/// N (soft targets), Σ m·w (`multi_margin`).
fn denominator(case: &Case) -> Ival {
    let prec = 1200;
    let (n, _) = dims(case);
    let mut d = Ival::zero(prec);
    if is_soft(case) {
        return Ival::point(prec, n as f64);
    }
    let t = case.inputs["target"].i().unwrap_or(&[]);
    let cw = case.inputs.get("class_weight").and_then(|t| t.f());
    if case.loss == "multi_margin" {
        let m = case.inputs.get("mask").and_then(|t| t.i());
        let w = case.inputs.get("weight").and_then(|t| t.f());
        for i in 0..n {
            if m.is_none_or(|m| m[i] != 0) {
                d = d.add(&Ival::point(prec, w.map_or(1.0, |w| w[i])));
            }
        }
        return d;
    }
    let ii = ignore_index(case);
    for &y in t {
        if Some(y) != ii {
            d = d.add(&Ival::point(prec, cw.map_or(1.0, |w| w[y as usize])));
        }
    }
    d
}

// ---------------------------------------------------------------------------------------------

/// **A logit shift leaves cross-entropy unchanged**: row i shifted by s_i = ±2^k·(the largest
/// ulp of its finite logits), kept only where every shifted entry is exact and finite (else the
/// row is not shifted). Value and gradient within both tolerances (bitwise for the oracle).
pub fn logit_shift_is_invariant(base: &Case, k: i32, negative: bool, side: Side) -> Outcome {
    if base.loss != "cross_entropy" {
        return Ok(Held::default());
    }
    let dtype = base.dtype;
    let mut sh = base.clone();
    let (n, c) = dims(base);
    let z = sh.inputs.get_mut("logits").unwrap().f_mut().unwrap();
    let mut shifted = 0;
    for i in 0..n {
        let row = &mut z[i * c..(i + 1) * c];
        let u = row
            .iter()
            .filter(|x| x.is_finite())
            .map(|&x| dtype.ulp_at(x))
            .fold(0.0, f64::max);
        if u == 0.0 {
            continue;
        }
        let s = if negative { -u * pow2(k) } else { u * pow2(k) };
        let ok = row.iter().all(|&x| {
            !x.is_finite() || {
                let y = x + s;
                // exact in f64 (y − s = x and y − x = s) and a value of the dtype
                y.is_finite()
                    && y - s == x
                    && y - x == s
                    && y.abs() <= dtype.max()
                    && dtype.round(y) == y
            }
        });
        if ok {
            for x in row.iter_mut() {
                if x.is_finite() {
                    *x += s;
                }
            }
            shifted += 1;
        }
    }
    if shifted == 0 {
        return Ok(Held {
            compared: 0,
            skipped: 1,
        });
    }
    let ob = observe(base, side)?;
    let os = observe(&sh, side)?;
    let mut h = Held::default();
    let r = check_all_scaled(&mut h, base, &os, &ob, &|i| i, &|_| 1.0);
    with_case(
        r,
        &format!("{}: a logit shift changed cross-entropy", side.name()),
        &[("base", base), ("shifted", &sh)],
    )
    .map(|_| h)
}

/// **label_smoothing 0 and all-ones class weights equal plain cross-entropy** (`nll`: unit
/// class weights equal none), within both tolerances (bitwise for the oracle).
pub fn plain_is_smoothing0_unit_weights(base: &Case, side: Side) -> Outcome {
    if base.loss == "multi_margin" {
        return Ok(Held::default());
    }
    let mut plain = base.clone();
    plain.inputs.remove("class_weight");
    if plain.params.contains_key("label_smoothing") {
        plain
            .params
            .insert("label_smoothing".into(), ParamValue::Float(0.0));
    }
    let (_, c) = dims(base);
    let mut unit = plain.clone();
    unit.inputs.insert(
        "class_weight".into(),
        Tensor::float(base.dtype, vec![c], vec![1.0; c]),
    );
    let op = observe(&plain, side)?;
    let ou = observe(&unit, side)?;
    let mut h = Held::default();
    let r = check_all_scaled(&mut h, &plain, &ou, &op, &|i| i, &|_| 1.0);
    with_case(
        r,
        &format!(
            "{}: smoothing 0 with unit class weights differs from plain",
            side.name()
        ),
        &[("plain", &plain), ("smoothing 0, unit weights", &unit)],
    )
    .map(|_| h)
}

/// The base with `tail` rows appended inactive: target = ignore_index (class ids; an
/// `ignore_index` that is a class id is replaced by −100 first, rows on it kept) or mask 0
/// (`multi_margin`). Each tail row is C values (anything).
pub fn append_skipped_rows(base: &Case, tail: &[Vec<f64>]) -> Option<Case> {
    if is_soft(base) || base.reduction() == Reduction::SequenceMean {
        return None;
    }
    let b = flatten_rows(base);
    let (n, c) = dims(&b);
    if c == 0 {
        return None; // C = 0 only with N = 0: no row can be appended
    }
    let name = data_name(&b);
    let k = tail.len();
    let mut e = b.clone();
    let dtype = b.dtype;
    {
        let z = e.inputs.get_mut(name).unwrap();
        let v = z.f_mut().unwrap();
        for row in tail {
            for j in 0..c {
                v.push(dtype.round(row.get(j).copied().unwrap_or(0.0)));
            }
        }
        z.shape = vec![n + k, c];
    }
    let margin = b.loss == "multi_margin";
    let ii = ignore_index(&b).unwrap_or(-100);
    {
        let t = e.inputs.get_mut("target").unwrap();
        let v = t.i_mut().unwrap();
        for r in 0..k {
            v.push(if margin { (r % c.max(1)) as i64 } else { ii });
        }
        t.shape = vec![n + k];
    }
    if margin {
        let m = e
            .inputs
            .entry("mask".into())
            .or_insert_with(|| Tensor::int(vec![n], vec![1; n]));
        m.i_mut().unwrap().extend(std::iter::repeat_n(0, k));
        m.shape = vec![n + k];
        if let Some(w) = e.inputs.get_mut("weight") {
            w.f_mut().unwrap().extend(std::iter::repeat_n(1.0, k));
            w.shape = vec![n + k];
        }
    }
    if b.reduction() == Reduction::None {
        if let Some(t) = e.inputs.get_mut("cotangent") {
            t.f_mut().unwrap().extend(std::iter::repeat_n(1.0, k));
            t.shape = vec![n + k];
        }
    }
    Some(e)
}

/// **Appending ignored (or masked) rows changes nothing**, bitwise: the reduced value, the
/// base's `none` outputs and gradients; the appended rows' outputs and gradients are 0.
pub fn skipped_rows_are_inert(base: &Case, tail: &[Vec<f64>], side: Side) -> Outcome {
    let Some(ext) = append_skipped_rows(base, tail) else {
        return Ok(Held::default());
    };
    let mut b = flatten_rows(base);
    if b.loss == "multi_margin" && !b.inputs.contains_key("mask") {
        let (n, _) = dims(&b);
        b.inputs
            .insert("mask".into(), Tensor::int(vec![n], vec![1; n]));
    }
    let (n, c) = dims(&b);
    let ob = observe(&b, side)?;
    let oe = observe(&ext, side)?;
    let mut h = Held::default();
    let none = b.reduction() == Reduction::None;
    let mut r = Ok(());
    let base_out: BTreeMap<String, &Vec<super::Comp>> = outputs(&ob).into_iter().collect();
    'outer: for (name, comps) in outputs(&oe) {
        let Some(bc) = base_out.get(&name) else {
            continue;
        };
        let keep = if name == "value" {
            if none {
                n
            } else {
                1
            }
        } else {
            n * c
        };
        for (i, x) in comps.iter().enumerate() {
            h.compared += 1;
            if i < keep {
                if !same_bits(x.x, bc[i].x) {
                    r = Err(format!(
                        "{name}[{i}]: {} became {}",
                        show(bc[i].x),
                        show(x.x)
                    ));
                    break 'outer;
                }
            } else if x.x != 0.0 {
                r = Err(format!(
                    "{name}[{i}] (an appended skipped row) is {}, not 0",
                    show(x.x)
                ));
                break 'outer;
            }
        }
    }
    with_case(
        r,
        &format!(
            "{}: appending {} skipped rows changed the answer",
            side.name(),
            tail.len()
        ),
        &[("base", &b), ("extended", &ext)],
    )
    .map(|_| h)
}

/// **Splitting a batch** into rows [0, k) and [k, N): the whole combines the parts' sums
/// exactly and their means by their denominators; `none` outputs and the gradients of each part
/// are its own (scaled by D_part / D for `mean`).
pub fn rows_concatenate(base: &Case, k: usize, side: Side) -> Outcome {
    if base.reduction() == Reduction::SequenceMean {
        return Ok(Held::default());
    }
    let ab = flatten_rows(base);
    let (n, c) = dims(&ab);
    if n < 2 {
        return Ok(Held::default());
    }
    let k = 1 + k % (n - 1);
    let (a, b) = (rows(&ab, 0, k), rows(&ab, k, n));
    let (oa, ob, oab) = (observe(&a, side)?, observe(&b, side)?, observe(&ab, side)?);
    let mut h = Held::default();
    let split = Split {
        value: k,
        grad: k * c,
    };
    let dens = (denominator(&a), denominator(&b));
    let r = combine(&mut h, &ab, split, dens, &oa, &ob, &oab, side);
    with_case(
        r,
        &format!("{}: splitting a batch of rows", side.name()),
        &[("a", &a), ("b", &b), ("a ++ b", &ab)],
    )
    .map(|_| h)
}

/// **sequence_mean is the mean of the sequences' means**: for [B,T,C] with `sequence_mean`,
/// the value is (1/K)·Σ_b M_b over the K sequences with a non-zero denominator (M_b: sequence b
/// alone, `mean`); when K is a power of two, each token's gradient is its sequence's `mean`
/// gradient divided by K.
pub fn sequence_mean_is_mean_of_sequences(base: &Case, side: Side) -> Outcome {
    let shape = &base.inputs["logits"].shape;
    if base.loss != "cross_entropy" || shape.len() != 3 {
        return Ok(Held::default());
    }
    let (bn, t, c) = (shape[0], shape[1], shape[2]);
    let mut sm = base.clone();
    sm.set_reduction(Reduction::SequenceMean);
    if base.reduction() == Reduction::None {
        sm.inputs.remove("cotangent");
    }
    let flat = flatten_rows(&sm);
    let mut seqs = Vec::new();
    for b in 0..bn {
        let mut s = rows(&flat, b * t, (b + 1) * t);
        s.set_reduction(Reduction::Mean);
        let d = denominator(&s);
        s.inputs.get_mut("logits").unwrap().shape = vec![1, t, c];
        s.inputs.get_mut("target").unwrap().shape = vec![1, t];
        if !d.is_zero() {
            seqs.push((b, s));
        }
    }
    let kk = seqs.len();
    let osm = observe(&sm, side)?;
    let mut h = Held::default();
    let oracle = matches!(side, Side::Oracle);
    let mut r = Ok(());
    let v = &osm.value[0];
    let obs: Vec<Observed> = seqs
        .iter()
        .map(|(_, s)| observe(s, side))
        .collect::<Result<_, _>>()?;
    if kk == 0 {
        h.compared += 1;
        if v.x != 0.0 {
            r = Err(format!(
                "no sequence has a non-zero denominator, yet sequence_mean = {}",
                show(v.x)
            ));
        }
    } else if oracle {
        let prec = v.exact.enclosure.prec();
        let mut sum = Ival::zero(prec);
        for o in &obs {
            sum = sum.add(&o.value[0].exact.enclosure);
        }
        let comb = sum.div(&Ival::point(prec, kk as f64));
        h.compared += 1;
        if !super::overlaps(&comb, &v.exact.enclosure) {
            r = Err(format!(
                "sequence_mean enclosure {} misses the mean of the {kk} sequence means {}",
                super::show_ival(&v.exact.enclosure),
                super::show_ival(&comb)
            ));
        }
    } else {
        let dt = base.out_dtype;
        let parts: Vec<&super::Comp> = obs.iter().map(|o| &o.value[0]).collect();
        if parts.iter().any(|p| p.x.is_nan()) {
            h.compared += 1;
            if !v.x.is_nan() {
                r = Err(format!(
                    "a sequence mean is NaN but sequence_mean is {}",
                    show(v.x)
                ));
            }
        } else if parts
            .iter()
            .chain([&v])
            .all(|p| p.x.is_finite() && p.exact.rounded.is_finite())
        {
            let w = 1.0 / kk as f64;
            let comb: f64 = parts.iter().map(|p| p.x).sum::<f64>() * w;
            let bound = v.err_bound(dt)
                + parts.iter().map(|p| w * p.err_bound(dt)).sum::<f64>()
                + comb.abs() * pow2(-48);
            h.compared += 1;
            if (v.x - comb).abs() > bound {
                r = Err(format!(
                    "sequence_mean = {} but the mean of the {kk} sequence means {:?} is {}; |difference| {} > bound {bound}",
                    show(v.x),
                    parts.iter().map(|p| p.x).collect::<Vec<_>>(),
                    show(comb),
                    (v.x - comb).abs()
                ));
            }
        } else {
            h.skipped += 1;
        }
    }
    // gradients: exact scaling by 1/K when K is a power of two
    if r.is_ok() && kk > 0 && kk.is_power_of_two() {
        if let Some(g) = osm.grads.get("logits") {
            'seq: for ((b, _), o) in seqs.iter().zip(&obs) {
                let Some(gb) = o.grads.get("logits") else {
                    continue;
                };
                for j in 0..t * c {
                    let i = b * t * c + j;
                    if let Err(e) = check_scaled(
                        &mut h,
                        base.dtype,
                        &format!("grad.logits[{i}]"),
                        &g[i],
                        &gb[j],
                        1.0 / kk as f64,
                    ) {
                        r = Err(e);
                        break 'seq;
                    }
                }
            }
        }
    }
    let mut cases: Vec<(&str, &Case)> = vec![("sequence_mean case", &sm)];
    for (_, s) in &seqs {
        cases.push(("a sequence", s));
    }
    with_case(
        r,
        &format!("{}: sequence_mean vs the sequences' means", side.name()),
        &cases,
    )
    .map(|_| h)
}

/// LSE of a row of finite values: m + log1p(Σ_{k≠argmax} e^{x_k − m}) (no 1 + tiny rounding).
fn lse(row: &[f64]) -> f64 {
    let (k, m) = row
        .iter()
        .copied()
        .enumerate()
        .fold(
            (0, f64::NEG_INFINITY),
            |b, (j, x)| if x > b.1 { (j, x) } else { b },
        );
    let rest: f64 = row
        .iter()
        .enumerate()
        .filter(|&(j, _)| j != k)
        .map(|(_, &x)| libm::exp(x - m))
        .sum();
    m + libm::log1p(rest)
}

/// RN_dtype(log_softmax(z)) of each row of finite logits, in f64 (error far below an ulp of
/// any dtype here), or `None` if a row holds a non-finite logit.
fn log_softmax_rows(z: &[f64], n: usize, c: usize, dtype: Dtype) -> Option<Vec<f64>> {
    let mut out = Vec::with_capacity(n * c);
    for i in 0..n {
        let row = &z[i * c..(i + 1) * c];
        if row.iter().any(|x| !x.is_finite()) {
            return None;
        }
        let lse = lse(row);
        for &x in row {
            out.push(dtype.round(x - lse));
        }
    }
    Some(out)
}

/// **nll on a log_softmax is cross-entropy**: with l = RN(log_softmax(z)) per row, CE(l) =
/// nll(l) + Σ_i w_{y_i}·LSE(l_i) / D exactly (D the denominator for `mean`, 1 for `sum`; per
/// row for `none`); LSE(l_i) is computed in f64 (it is within an ulp of
/// l of 0). Values only; smoothing is set to 0 (nll has none); rows must be finite.
pub fn nll_on_log_softmax_is_cross_entropy(base: &Case, side: Side) -> Outcome {
    if base.loss != "cross_entropy" || is_soft(base) || base.reduction() == Reduction::SequenceMean
    {
        return Ok(Held::default());
    }
    let ce0 = flatten_rows(base);
    let (n, c) = dims(&ce0);
    let dtype = base.dtype;
    let Some(l) = log_softmax_rows(ce0.inputs["logits"].f().unwrap(), n, c, dtype) else {
        return Ok(Held::default());
    };
    let mut ce = ce0.clone();
    ce.params
        .insert("label_smoothing".into(), ParamValue::Float(0.0));
    ce.inputs
        .insert("logits".into(), Tensor::float(dtype, vec![n, c], l.clone()));
    ce.grad.clear();
    let mut nll = Case::new("nll", dtype).expect("nll is in the catalogue");
    nll.out_dtype = ce.out_dtype;
    nll.params
        .insert("reduction".into(), ce.params["reduction"].clone());
    nll.params
        .insert("ignore_index".into(), ce.params["ignore_index"].clone());
    nll.grad.clear();
    for (k, t) in &ce.inputs {
        let key = if k == "logits" { "logp" } else { k.as_str() };
        nll.inputs.insert(key.to_string(), t.clone());
    }
    // Σ c_i·w_y·LSE(l_i) per row, in f64
    let ii = ignore_index(&ce);
    let t = ce.inputs["target"].i().unwrap();
    let cw = ce.inputs.get("class_weight").and_then(|t| t.f());
    let red = ce.reduction();
    let delta_row: Vec<f64> = (0..n)
        .map(|i| {
            if Some(t[i]) == ii {
                return 0.0;
            }
            cw.map_or(1.0, |w| w[t[i] as usize]) * lse(&l[i * c..(i + 1) * c])
        })
        .collect();
    let d = super::d_f64(&denominator(&ce));
    // (the cotangent scales gradients only, never the value)
    let deltas: Vec<f64> = match red {
        Reduction::None => delta_row,
        _ => {
            let s: f64 = delta_row.iter().sum();
            vec![if red == Reduction::Mean {
                if d == 0.0 {
                    0.0
                } else {
                    s / d
                }
            } else {
                s
            }]
        }
    };
    let oce = observe(&ce, side)?;
    let onl = observe(&nll, side)?;
    let mut h = Held::default();
    let dt = ce.out_dtype;
    let mut r = Ok(());
    for (i, (a, b)) in oce.value.iter().zip(&onl.value).enumerate() {
        if !(a.x.is_finite()
            && b.x.is_finite()
            && a.exact.rounded.is_finite()
            && b.exact.rounded.is_finite())
        {
            h.skipped += 1;
            continue;
        }
        let want = b.x + deltas[i];
        let bound = a.err_bound(dt)
            + b.err_bound(dt)
            + deltas[i].abs() * pow2(-40)
            + want.abs() * pow2(-48);
        h.compared += 1;
        if (a.x - want).abs() > bound {
            r = Err(format!(
                "value[{i}]: cross_entropy(l) = {} but nll(l) + Σ w·LSE(l)/D = {} + {} = {}; |difference| {} > bound {bound}",
                show(a.x),
                show(b.x),
                show(deltas[i]),
                show(want),
                (a.x - want).abs()
            ));
            break;
        }
    }
    with_case(
        r,
        &format!("{}: nll on log_softmax vs cross_entropy", side.name()),
        &[("cross_entropy(l)", &ce), ("nll(l)", &nll)],
    )
    .map(|_| h)
}
