//! Shared pieces of the throughput benches (`multiclass`, `elementwise`, `rows`): seeded input
//! streams, a counting global allocator (peak heap per call), the memory probe, the naive
//! scalar baselines' dtype conversion, and the end-of-run ratio table read back from
//! criterion's `estimates.json` (written to `<criterion dir>/ratios-<bench>.md`).
#![allow(dead_code)]

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, Throughput};
use losscheck::Element;
use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

// ---------------------------------------------------------------------------------------------
// Peak heap: a counting allocator over the system one.

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let p = System.alloc(l);
        if !p.is_null() {
            let now = LIVE.fetch_add(l.size(), Relaxed) + l.size();
            PEAK.fetch_max(now, Relaxed);
        }
        p
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        let p = System.alloc_zeroed(l);
        if !p.is_null() {
            let now = LIVE.fetch_add(l.size(), Relaxed) + l.size();
            PEAK.fetch_max(now, Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        System.dealloc(p, l);
        LIVE.fetch_sub(l.size(), Relaxed);
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        let q = System.realloc(p, l, new);
        if !q.is_null() {
            // old and new blocks may coexist during the move: count both
            let now = LIVE.fetch_add(new, Relaxed) + new;
            PEAK.fetch_max(now, Relaxed);
            LIVE.fetch_sub(l.size(), Relaxed);
        }
        q
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// (live heap bytes before, peak live heap bytes during) one call of `f`.
pub fn peak_of<R>(f: impl FnOnce() -> R) -> (usize, usize) {
    let before = LIVE.load(Relaxed);
    PEAK.store(before, Relaxed);
    black_box(f());
    (before, PEAK.load(Relaxed))
}

// ---------------------------------------------------------------------------------------------
// Inputs: a fixed xorshift stream; Box–Muller (libm) for normals.

pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed | 1)
    }
    /// Uniform in (0, 1).
    pub fn uniform(&mut self) -> f64 {
        let s = &mut self.0;
        *s ^= *s << 13;
        *s ^= *s >> 7;
        *s ^= *s << 17;
        ((*s >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }
    /// `n` draws of N(mu, sigma²), rounded to `T`.
    pub fn normal<T: Io>(&mut self, n: usize, mu: f64, sigma: f64) -> Vec<T> {
        let mut z = Vec::with_capacity(n + 1);
        while z.len() < n {
            let (u, v) = (self.uniform(), self.uniform());
            let r = sigma * libm::sqrt(-2.0 * libm::log(u));
            let t = 2.0 * std::f64::consts::PI * v;
            z.push(T::from_f64(mu + r * libm::cos(t)));
            z.push(T::from_f64(mu + r * libm::sin(t)));
        }
        z.truncate(n);
        z
    }
    /// `n` draws of U(lo, hi), rounded to `T`.
    pub fn uniform_vec<T: Io>(&mut self, n: usize, lo: f64, hi: f64) -> Vec<T> {
        (0..n)
            .map(|_| T::from_f64(lo + (hi - lo) * self.uniform()))
            .collect()
    }
}

/// The dtypes benchmarked; the naive baselines compute in f32 and convert at load / store.
pub trait Io: Element + Copy + Default + Send + Sync + 'static {
    const NAME: &'static str;
    fn f(self) -> f32;
    fn of(x: f32) -> Self;
}

impl Io for f32 {
    const NAME: &'static str = "f32";
    #[inline(always)]
    fn f(self) -> f32 {
        self
    }
    #[inline(always)]
    fn of(x: f32) -> Self {
        x
    }
}

impl Io for half::bf16 {
    const NAME: &'static str = "bf16";
    #[inline(always)]
    fn f(self) -> f32 {
        self.to_f32()
    }
    #[inline(always)]
    fn of(x: f32) -> Self {
        half::bf16::from_f32(x)
    }
}

/// Stable log(1 + e^x) in f32 (the textbook max(x, 0) + log1p(e^−|x|)).
#[inline(always)]
pub fn softplus(x: f32) -> f32 {
    x.max(0.0) + libm::log1pf(libm::expf(-x.abs()))
}

#[inline(always)]
pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + libm::expf(-x))
}

// ---------------------------------------------------------------------------------------------
// The memory probe: reads every input byte and writes every output byte once, nothing else.

pub fn bytes<T>(x: &[T]) -> &[u8] {
    // SAFETY: any initialised slice of plain numbers is readable as bytes.
    unsafe { std::slice::from_raw_parts(x.as_ptr().cast(), std::mem::size_of_val(x)) }
}

pub fn bytes_mut<T: Copy>(x: &mut [T]) -> &mut [u8] {
    // SAFETY: the benched element types (f32, bf16) are valid for every bit pattern.
    unsafe { std::slice::from_raw_parts_mut(x.as_mut_ptr().cast(), std::mem::size_of_val(x)) }
}

/// Sums the inputs as u64 words (vectorised integer adds), then stores a word pattern derived
/// from that sum into every output (plain stores, not memset, like a kernel's gradient loop).
pub fn probe(reads: &[&[u8]], writes: &mut [&mut [u8]]) -> u64 {
    let mut acc = 0u64;
    for r in reads {
        // SAFETY: u64 has no invalid bit patterns; align_to handles the unaligned ends.
        let (pre, mid, post) = unsafe { r.align_to::<u64>() };
        acc = mid.iter().fold(acc, |a, &w| a.wrapping_add(w));
        acc = pre
            .iter()
            .chain(post)
            .fold(acc, |a, &b| a.wrapping_add(b as u64));
    }
    let seed = black_box(acc);
    for w in writes.iter_mut() {
        // SAFETY: as above.
        let (pre, mid, post) = unsafe { w.align_to_mut::<u64>() };
        for (i, x) in mid.iter_mut().enumerate() {
            *x = seed ^ i as u64;
        }
        pre.iter_mut().chain(post).for_each(|b| *b = seed as u8);
    }
    acc
}

// ---------------------------------------------------------------------------------------------
// Groups: one per (loss, dtype, shape, distribution), benchmarks `kernel`, `naive`, `probe`.

/// One benchmark group's description and the peak heap of its benchmarks' first calls.
pub struct Row {
    pub group: String,
    pub label: String,
    pub elements: u64,
    pub bytes: u64,
    /// (id, live heap before, peak during, loss value) of each benchmark's first call.
    pub peaks: Vec<(String, usize, usize, Option<f64>)>,
}

/// What a benchmarked call returns: the loss value (kernel, naive) or not (probe).
pub trait Value {
    fn value(&self) -> Option<f64>;
}

impl Value for f32 {
    fn value(&self) -> Option<f64> {
        Some(*self as f64)
    }
}

impl Value for u64 {
    fn value(&self) -> Option<f64> {
        None
    }
}

pub struct Group<'a> {
    g: BenchmarkGroup<'a, WallTime>,
    row: Row,
}

impl<'a> Group<'a> {
    /// Group `<loss>_<dtype>_<tag>` (labelled `<loss> <dtype> <label>`): `elements` per call,
    /// `arrays` input + gradient arrays of `elements` `T`s and `extra` bytes (class ids) read
    /// or written per call.
    pub fn new<T: Io>(
        c: &'a mut Criterion,
        [loss, tag, label]: [&str; 3],
        elements: usize,
        arrays: usize,
        extra: usize,
    ) -> Self {
        let group = format!("{loss}_{}_{tag}", T::NAME);
        let label = format!("{loss} {} {label}", T::NAME);
        let (elements, bytes) = (
            elements as u64,
            (arrays * elements * std::mem::size_of::<T>() + extra) as u64,
        );
        let mut g = c.benchmark_group(&group);
        g.throughput(Throughput::ElementsAndBytes { elements, bytes });
        g.sample_size(10);
        Group {
            g,
            row: Row {
                group,
                label,
                elements,
                bytes,
                peaks: Vec::new(),
            },
        }
    }

    /// Benchmarks `f` (one forward + backward call) as `id`, after recording the peak heap
    /// and the value of a first call.
    pub fn run<R: Value>(&mut self, id: &str, mut f: impl FnMut() -> R) {
        let mut v = None;
        let (before, peak) = peak_of(|| v = f().value());
        self.row.peaks.push((id.into(), before, peak, v));
        self.g.bench_function(id, |b| b.iter(&mut f));
    }

    /// Benchmarks the memory probe over `reads` and `writes` as `probe`.
    pub fn probe(&mut self, reads: &[&[u8]], writes: &mut [&mut [u8]]) {
        self.run("probe", || probe(reads, writes));
    }

    /// `probe_t2`: the memory probe on two threads, each reading and writing its half of
    /// every buffer — the bandwidth two cores get, against which `kernel_t2` is measured.
    pub fn probe_t2(&mut self, reads: &[&[u8]], writes: &mut [&mut [u8]]) {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
        let halves = |r: &[&[u8]], k: usize| -> Vec<(usize, usize)> {
            r.iter().map(|b| if k == 0 { (0, b.len() / 2) } else { (b.len() / 2, b.len()) }).collect()
        };
        let (rh0, rh1) = (halves(reads, 0), halves(reads, 1));
        let wl: Vec<usize> = writes.iter().map(|w| w.len()).collect();
        self.run("probe_t2", || {
            // split every write buffer at its middle: the two halves go to the two threads
            let (mut w0, mut w1): (Vec<&mut [u8]>, Vec<&mut [u8]>) = writes
                .iter_mut()
                .zip(&wl)
                .map(|(w, &n)| w.split_at_mut(n / 2))
                .unzip();
            let r0: Vec<&[u8]> = reads.iter().zip(&rh0).map(|(b, &(a, e))| &b[a..e]).collect();
            let r1: Vec<&[u8]> = reads.iter().zip(&rh1).map(|(b, &(a, e))| &b[a..e]).collect();
            let (a, b) = pool.install(|| rayon::join(|| probe(&r0, &mut w0), || probe(&r1, &mut w1)));
            a.wrapping_add(b)
        });
    }

    pub fn finish(self) -> Row {
        self.g.finish();
        self.row
    }
}

// ---------------------------------------------------------------------------------------------
// The ratio table, from criterion's estimates.

/// Criterion's output directory (as criterion finds it: CRITERION_HOME, else
/// $CARGO_TARGET_DIR/criterion, else target/criterion).
pub fn criterion_dir() -> PathBuf {
    if let Some(h) = std::env::var_os("CRITERION_HOME") {
        return h.into();
    }
    let t = std::env::var_os("CARGO_TARGET_DIR").unwrap_or_else(|| "target".into());
    PathBuf::from(t).join("criterion")
}

/// Median (ns) of `group/id` from its `new/estimates.json`.
pub fn median_ns(group: &str, id: &str) -> Option<f64> {
    let p = criterion_dir()
        .join(group)
        .join(id)
        .join("new/estimates.json");
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(p).ok()?).ok()?;
    v["median"]["point_estimate"].as_f64()
}

fn ms(ns: Option<f64>) -> String {
    ns.map_or("—".into(), |t| format!("{:.2}", t / 1e6))
}

fn ratio(num: Option<f64>, den: Option<f64>) -> String {
    match (num, den) {
        (Some(a), Some(b)) => format!("{:.2}", a / b),
        _ => "—".into(),
    }
}

fn mib(b: usize) -> String {
    format!("{:.0}", b as f64 / (1u64 << 20) as f64)
}

/// Prints the table of medians and ratios for `rows` and writes it to
/// `<criterion dir>/ratios-<bench>.md`. (A filter that matches nothing, e.g. `cargo bench
/// --bench rows -- none`, rewrites the table from the stored estimates without timing.)
pub fn report(bench: &str, rows: &[Row]) {
    let mut s = String::from(
        "| benchmark | kernel ms | naive ms | probe ms | kernel speed ÷ naive | kernel speed ÷ probe \
         | kernel GB/s | kernel Melem/s | probe GB/s | peak heap MiB (kernel call) | kernel's own MiB \
         | value: naive ÷ kernel − 1 |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in rows {
        let (k, n, p) = (
            median_ns(&r.group, "kernel"),
            median_ns(&r.group, "naive"),
            median_ns(&r.group, "probe"),
        );
        let gbs = |t: Option<f64>| t.map_or("—".into(), |t| format!("{:.3}", r.bytes as f64 / t));
        let first = |id: &str| r.peaks.iter().find(|p| p.0 == id);
        let (before, peak) = first("kernel").map_or((0, 0), |p| (p.1, p.2));
        let dv = match (
            first("kernel").and_then(|p| p.3),
            first("naive").and_then(|p| p.3),
        ) {
            (Some(a), Some(b)) => format!("{:.1e}", b / a - 1.0),
            _ => "—".into(),
        };
        s += &format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            r.label,
            ms(k),
            ms(n),
            ms(p),
            ratio(n, k),
            ratio(p, k),
            gbs(k),
            k.map_or("—".into(), |t| format!(
                "{:.1}",
                r.elements as f64 / t * 1e3
            )),
            gbs(p),
            mib(peak),
            mib(peak - before),
            dv,
        );
    }
    println!("\n{s}");
    let path = criterion_dir().join(format!("ratios-{bench}.md"));
    if std::fs::create_dir_all(criterion_dir()).is_ok() && std::fs::write(&path, &s).is_ok() {
        println!("(written to {})", path.display());
    }
}

/// `main` for a bench binary: runs `benches` with criterion's command-line config, then the
/// table.
pub fn main(bench: &str, benches: impl FnOnce(&mut Criterion) -> Vec<Row>) {
    let mut c = Criterion::default().configure_from_args();
    let rows = benches(&mut c);
    c.final_summary();
    report(bench, &rows);
    if rows.iter().any(|r| median_ns(&r.group, "kernel_t2").is_some()) {
        report_t2(bench, &rows);
    }
}

/// The two-thread kernel's medians and ratios (`ratios-<bench>-t2.md`), for the groups that
/// have a `kernel_t2` benchmark.
pub fn report_t2(bench: &str, rows: &[Row]) {
    let mut s = String::from(
        "| benchmark | kernel (1 thread) ms | kernel_t2 (2 threads) ms | t2 speed-up | \
         naive ms | probe ms | probe_t2 (2 threads) ms | kernel_t2 speed ÷ naive | \
         kernel_t2 speed ÷ probe | kernel_t2 speed ÷ probe_t2 | kernel_t2 GB/s |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    let f = |x: Option<f64>| x.map_or("—".to_string(), |t| format!("{:.2}", t / 1e6));
    let r2 = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) => format!("{:.2}", a / b),
        _ => "—".into(),
    };
    for r in rows {
        let m = |id| median_ns(&r.group, id);
        if m("kernel_t2").is_none() {
            continue;
        }
        let (k1, k2, nv, pr) = (m("kernel"), m("kernel_t2"), m("naive"), m("probe"));
        let p2 = m("probe_t2");
        s += &format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            r.label,
            f(k1),
            f(k2),
            r2(k1, k2),
            f(nv),
            f(pr),
            f(p2),
            r2(nv, k2),
            r2(pr, k2),
            r2(p2, k2),
            k2.map_or("—".into(), |t| format!("{:.3}", r.bytes as f64 / t)),
        );
    }
    println!("\n{s}");
    let path = criterion_dir().join(format!("ratios-{bench}-t2.md"));
    if std::fs::write(&path, &s).is_ok() {
        println!("(written to {})", path.display());
    }
}

