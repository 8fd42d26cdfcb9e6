use losscheck::kernels::classification::multiclass::{CrossEntropyArgs, Output};
fn main() {
    let iters: usize = std::env::args().nth(1).unwrap().parse().unwrap();
    let (n, c) = (1024usize, 32000usize);
    let mut s = 1u64;
    let mut u = || { s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407); (s >> 11) as f64 / (1u64 << 53) as f64 };
    let z: Vec<f32> = (0..n * c).map(|_| { let (a, b) = (u().max(1e-300), u()); ((-2.0 * a.ln()).sqrt() * (6.283185307179586 * b).cos() * 3.0) as f32 }).collect();
    let y: Vec<i64> = (0..n).map(|_| (u() * c as f64) as i64).collect();
    let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
    let mut out = Output::<f32, f32>::default();
    let t = std::time::Instant::now();
    pool.install(|| for _ in 0..iters {
        CrossEntropyArgs::new(&z, n, c).class_ids(&y).eval_into(&mut out).unwrap();
    });
    eprintln!("{:?} per iter, value {}", t.elapsed() / iters.max(1) as u32, out.value.first().copied().unwrap_or(0.0));
}
