//! The exec subject of PROTOCOL.md: any program that speaks the protocol on its stdin and
//! stdout is a [`Subject`] — and [`serve`], the subject side of the protocol for a built-in
//! subject (`losscheck serve`).
//!
//! # How it runs
//!
//! [`ExecSubject::start`] runs `sh -c CMD` (in its own process group), sends the handshake and
//! parses the capabilities; a command that does not start or fails the handshake is a set-up
//! error. Campaigns ask from several threads, so the subject keeps a **pool of up to K child
//! processes** (K = [`ExecOptions::workers`], by default the number of rayon threads), each
//! answering one request at a time: throughput scales with K and a fault costs only the one
//! process it happened in. Every process gets the handshake; the first one's capabilities are
//! the subject's.
//!
//! Each process has a writer thread (so a subject that stops reading cannot block losscheck), a
//! stdout reader thread that cuts lines (at most [`ExecOptions::max_line`] bytes plus 64 bytes
//! per number expected in the response, so a runaway subject cannot exhaust memory) and a stderr
//! thread that keeps the last [`ExecOptions::stderr_limit`] bytes for the report.
//!
//! # Faults
//!
//! The request waits `timeout + 1 µs per byte of request and of expected response` (the
//! PROTOCOL.md "base plus a share proportional to the payload"; 1 µs/byte is 1 s per MB). A
//! process that exits or is killed (`crash`), does not answer in time (`hang`), or writes a line
//! that is not JSON, too long, with the wrong `id`, wrong shapes, missing gradients, an unknown
//! error `kind`, or a number that is not acceptable in its dtype (`protocol`), yields a
//! [`Fault`]: the process (group) is killed and the next request starts a new one. After three
//! failed restarts in a row the subject gives up: every further request is a `crash` at once.
//!
//! # Numbers in responses
//!
//! PROTOCOL.md: a number is accepted when its binary64 value is a value of the expected dtype,
//! or when it has at most 9 (f32), 5 (f16) or 4 (bf16) significant digits (trailing zeros not
//! counted), in which case it stands for the dtype value nearest the decimal — decided exactly,
//! even where the decimal rounds to binary64 on a midpoint of the dtype. The strings `"nan"`,
//! `"inf"`, `"-inf"` and the bare tokens `NaN`, `Infinity`, `-Infinity` are accepted.

use crate::check::compare::Verdict;
use crate::check::subject::{Answer, Capabilities, Fault, Subject};
use losscheck_core::tensor::decode_f64;
use losscheck_core::{catalogue, Case, Dtype, ErrorKind, LossError, Response, Tensor};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// How to run an exec subject.
#[derive(Clone, Debug)]
pub struct ExecOptions {
    /// The command, run with `sh -c`.
    pub command: String,
    /// The base of the per-request timeout (PROTOCOL.md: 10 s by default).
    pub timeout: Duration,
    /// The handshake's timeout (start-up: importing torch or jax takes seconds).
    pub handshake_timeout: Duration,
    /// At most this many child processes answer at once.
    pub workers: usize,
    /// Longest response line accepted beyond 64 bytes per expected number.
    pub max_line: usize,
    /// Bytes of stderr kept per process (the tail).
    pub stderr_limit: usize,
}

impl ExecOptions {
    pub fn new(command: &str) -> ExecOptions {
        ExecOptions {
            command: command.to_string(),
            timeout: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(60),
            workers: rayon::current_num_threads().max(1),
            max_line: 1 << 16,
            stderr_limit: 16 << 10,
        }
    }
}

/// The per-request timeout: the base plus 1 µs per byte of request and expected response.
pub fn request_timeout(base: Duration, request_bytes: usize, expected_numbers: usize) -> Duration {
    base + Duration::from_micros((request_bytes + 25 * expected_numbers) as u64)
}

/// A bounded tail of bytes.
#[derive(Default)]
struct Tail {
    buf: Vec<u8>,
    limit: usize,
}

impl Tail {
    fn push(&mut self, b: &[u8]) {
        self.buf.extend_from_slice(b);
        if self.buf.len() > 2 * self.limit {
            let cut = self.buf.len() - self.limit;
            self.buf.drain(..cut);
        }
    }
    fn text(&self) -> String {
        let s = &self.buf[self.buf.len().saturating_sub(self.limit)..];
        String::from_utf8_lossy(s).into_owned()
    }
}

enum Msg {
    Line(String),
    TooLong(usize),
    Eof,
}

// ---------------------------------------------------------------------------------------------
// Killing the children when losscheck itself is interrupted.

/// Process groups of the live children, for [`kill_children_on_signal`] (0: free slot).
static PGIDS: [std::sync::atomic::AtomicI32; 256] =
    [const { std::sync::atomic::AtomicI32::new(0) }; 256];

fn register_pgid(pgid: i32) {
    for s in &PGIDS {
        if s.compare_exchange(0, pgid, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            return;
        }
    }
}

fn unregister_pgid(pgid: i32) {
    for s in &PGIDS {
        let _ = s.compare_exchange(pgid, 0, Ordering::AcqRel, Ordering::Relaxed);
    }
}

extern "C" fn on_fatal_signal(sig: libc::c_int) {
    for s in &PGIDS {
        let p = s.load(Ordering::Acquire);
        if p > 0 {
            // SAFETY: kill(2) is async-signal-safe; p is a process group we created.
            unsafe {
                libc::kill(-p, libc::SIGKILL);
            }
        }
    }
    // SAFETY: signal(2) and raise(3) are async-signal-safe: die of the signal as before.
    unsafe {
        libc::signal(sig, libc::SIG_DFL);
        libc::raise(sig);
    }
}

/// Kill every exec subject's process group when this process gets SIGINT, SIGTERM or SIGHUP
/// (the children run in process groups of their own, so a terminal's Ctrl-C does not reach
/// them, and a hung one would outlive losscheck). Installs signal handlers: for programs (the
/// CLI calls it), not for libraries.
pub fn kill_children_on_signal() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            // SAFETY: installing a handler that only calls async-signal-safe functions.
            unsafe {
                libc::signal(sig, on_fatal_signal as *const () as libc::sighandler_t);
            }
        }
    });
}

/// One child process.
struct Worker {
    child: Child,
    /// Lines to write (dropping it closes the child's stdin).
    tx: Option<Sender<Vec<u8>>>,
    lines: Receiver<Msg>,
    max_line: Arc<AtomicUsize>,
    stderr: Arc<Mutex<Tail>>,
    stderr_done: Arc<AtomicBool>,
    reaped: bool,
}

/// Read one line of at most `max` bytes (without the newline). `Ok(None)` at end of file.
/// `max` is read at every check: the limit of the request being answered applies.
fn read_bounded(
    r: &mut impl BufRead,
    buf: &mut Vec<u8>,
    max: &AtomicUsize,
) -> Result<Option<()>, usize> {
    loop {
        let avail = match r.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return Ok(None),
        };
        if avail.is_empty() {
            return Ok(if buf.is_empty() { None } else { Some(()) });
        }
        if let Some(i) = avail.iter().position(|&b| b == b'\n') {
            buf.extend_from_slice(&avail[..i]);
            r.consume(i + 1);
            if buf.len() > max.load(Ordering::Relaxed) {
                return Err(buf.len());
            }
            return Ok(Some(()));
        }
        let n = avail.len();
        buf.extend_from_slice(avail);
        r.consume(n);
        if buf.len() > max.load(Ordering::Relaxed) {
            return Err(buf.len());
        }
    }
}

fn describe_status(st: std::process::ExitStatus) -> String {
    if let Some(sig) = st.signal() {
        let name = match sig {
            libc::SIGKILL => " (SIGKILL)",
            libc::SIGSEGV => " (SIGSEGV)",
            libc::SIGABRT => " (SIGABRT)",
            libc::SIGTERM => " (SIGTERM)",
            libc::SIGBUS => " (SIGBUS)",
            libc::SIGFPE => " (SIGFPE)",
            libc::SIGILL => " (SIGILL)",
            _ => "",
        };
        format!("was killed by signal {sig}{name}")
    } else {
        match st.code() {
            // a shell reports a child killed by signal s as 128 + s
            Some(c) if c > 128 && c < 128 + 32 => {
                format!(
                    "exited with status {c} (a shell's report of signal {})",
                    c - 128
                )
            }
            c => format!("exited with status {}", c.unwrap_or(-1)),
        }
    }
}

impl Worker {
    fn spawn(opts: &ExecOptions, shared: &Arc<Mutex<Tail>>) -> Result<Worker, String> {
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(&opts.command)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .map_err(|e| format!("cannot start `sh -c {}`: {e}", opts.command))?;
        register_pgid(child.id() as i32);
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut stderr = child.stderr.take().expect("piped stderr");
        let (tx, rx) = mpsc::channel::<Vec<u8>>();
        std::thread::spawn(move || {
            let mut w = stdin;
            for line in rx {
                if w.write_all(&line).and_then(|_| w.flush()).is_err() {
                    break;
                }
            }
        });
        let max_line = Arc::new(AtomicUsize::new(opts.max_line));
        let (ltx, lrx) = mpsc::channel::<Msg>();
        let ml = max_line.clone();
        std::thread::spawn(move || {
            let mut r = BufReader::with_capacity(1 << 16, stdout);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                let msg = match read_bounded(&mut r, &mut buf, &ml) {
                    Ok(Some(())) => Msg::Line(String::from_utf8_lossy(&buf).into_owned()),
                    Ok(None) => Msg::Eof,
                    Err(n) => Msg::TooLong(n),
                };
                let last = !matches!(msg, Msg::Line(_));
                if ltx.send(msg).is_err() || last {
                    break;
                }
            }
        });
        let tail = Arc::new(Mutex::new(Tail {
            buf: Vec::new(),
            limit: opts.stderr_limit,
        }));
        let done = Arc::new(AtomicBool::new(false));
        let (t2, s2, d2) = (tail.clone(), shared.clone(), done.clone());
        std::thread::spawn(move || {
            let mut b = [0u8; 4096];
            loop {
                match stderr.read(&mut b) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        t2.lock().unwrap().push(&b[..n]);
                        s2.lock().unwrap().push(&b[..n]);
                    }
                }
            }
            d2.store(true, Ordering::Release);
        });
        Ok(Worker {
            child,
            tx: Some(tx),
            lines: lrx,
            max_line,
            stderr: tail,
            stderr_done: done,
            reaped: false,
        })
    }

    /// The stderr tail, after giving the stderr thread a moment to drain (up to 200 ms).
    fn stderr_tail(&self, wait: bool) -> String {
        if wait {
            let t0 = Instant::now();
            while !self.stderr_done.load(Ordering::Acquire)
                && t0.elapsed() < Duration::from_millis(200)
            {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        self.stderr.lock().unwrap().text()
    }

    /// Kill the process group and reap the child.
    fn kill(&mut self) {
        if self.reaped {
            return;
        }
        self.tx = None;
        let pid = self.child.id() as i32;
        // SAFETY: kill(2) on the process group this worker created (process_group(0)).
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.reaped = true;
        unregister_pgid(pid);
    }

    /// Why the process stopped answering: wait up to 500 ms for it to exit.
    fn exit_reason(&mut self) -> String {
        let t0 = Instant::now();
        loop {
            match self.child.try_wait() {
                Ok(Some(st)) => {
                    self.reaped = true;
                    // the rest of the group goes too
                    // SAFETY: as in `kill`.
                    unsafe {
                        libc::kill(-(self.child.id() as i32), libc::SIGKILL);
                    }
                    unregister_pgid(self.child.id() as i32);
                    return format!("the subject {}", describe_status(st));
                }
                Ok(None) if t0.elapsed() < Duration::from_millis(500) => {
                    std::thread::sleep(Duration::from_millis(2))
                }
                _ => return "the subject closed its stdout".to_string(),
            }
        }
    }

    /// Send one line and wait for one line back.
    fn roundtrip(
        &mut self,
        line: &str,
        timeout: Duration,
        max_line: usize,
    ) -> Result<String, (Verdict, String)> {
        self.max_line.store(max_line, Ordering::Relaxed);
        let mut bytes = Vec::with_capacity(line.len() + 1);
        bytes.extend_from_slice(line.as_bytes());
        bytes.push(b'\n');
        let sent = self.tx.as_ref().is_some_and(|tx| tx.send(bytes).is_ok());
        if !sent {
            let why = self.exit_reason();
            return Err((Verdict::Crash, why));
        }
        match self.lines.recv_timeout(timeout) {
            Ok(Msg::Line(s)) => Ok(s),
            Ok(Msg::TooLong(n)) => Err((
                Verdict::Protocol,
                format!("a response line longer than {max_line} bytes (cut at {n})"),
            )),
            Ok(Msg::Eof) | Err(RecvTimeoutError::Disconnected) => {
                let why = self.exit_reason();
                Err((Verdict::Crash, why))
            }
            Err(RecvTimeoutError::Timeout) => Err((
                Verdict::Hang,
                format!("no answer within {} ms", timeout.as_millis()),
            )),
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.kill();
    }
}

struct Pool {
    idle: Vec<Worker>,
    live: usize,
}

/// A program speaking PROTOCOL.md, as a subject. See the module docs.
pub struct ExecSubject {
    opts: ExecOptions,
    caps: Capabilities,
    warnings: Vec<String>,
    pool: Mutex<Pool>,
    freed: Condvar,
    shared_stderr: Arc<Mutex<Tail>>,
    restarts: AtomicU64,
    faults: AtomicU64,
    failed_restarts: AtomicU32,
    dead: AtomicBool,
    requests: AtomicU64,
}

/// Start a worker and do the handshake.
fn start_worker(
    opts: &ExecOptions,
    shared: &Arc<Mutex<Tail>>,
) -> Result<(Worker, Capabilities, Vec<String>), String> {
    let mut w = Worker::spawn(opts, shared)?;
    let hello = json!({"op": "hello", "protocol": 1}).to_string();
    let fail = |w: &Worker, what: String| {
        let tail = w.stderr_tail(true);
        if tail.trim().is_empty() {
            what
        } else {
            format!("{what}\nstderr (tail):\n{}", tail.trim_end())
        }
    };
    let line = match w.roundtrip(&hello, opts.handshake_timeout, 1 << 20) {
        Ok(l) => l,
        Err((_, why)) => {
            let m = fail(
                &w,
                format!("handshake with `{}` failed: {why}", opts.command),
            );
            return Err(m);
        }
    };
    let v: Value = match serde_json::from_str(&fix_bare_tokens(&line)) {
        Ok(v) => v,
        Err(e) => {
            let m = fail(
                &w,
                format!(
                    "handshake with `{}` failed: the answer is not JSON ({e}): {}",
                    opts.command,
                    excerpt(&line)
                ),
            );
            return Err(m);
        }
    };
    match Capabilities::from_json(&v) {
        Ok((c, warn)) => Ok((w, c, warn)),
        Err(e) => {
            let m = fail(&w, format!("handshake with `{}` failed: {e}", opts.command));
            Err(m)
        }
    }
}

fn excerpt(s: &str) -> String {
    let mut e: String = s.chars().take(200).collect();
    if s.chars().count() > 200 {
        e.push('…');
    }
    e
}

impl ExecSubject {
    /// Start the command and do the handshake (`Err`: a set-up error — it does not start, or
    /// does not answer the handshake with valid capabilities).
    pub fn start(opts: ExecOptions) -> Result<ExecSubject, String> {
        let shared = Arc::new(Mutex::new(Tail {
            buf: Vec::new(),
            limit: opts.stderr_limit,
        }));
        let (w, caps, warnings) = start_worker(&opts, &shared)?;
        Ok(ExecSubject {
            opts,
            caps,
            warnings,
            pool: Mutex::new(Pool {
                idle: vec![w],
                live: 1,
            }),
            freed: Condvar::new(),
            shared_stderr: shared,
            restarts: AtomicU64::new(0),
            faults: AtomicU64::new(0),
            failed_restarts: AtomicU32::new(0),
            dead: AtomicBool::new(false),
            requests: AtomicU64::new(0),
        })
    }

    /// The command.
    pub fn command(&self) -> &str {
        &self.opts.command
    }
    /// Warnings from the handshake (unknown losses, params or inputs).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }
    /// Processes started after a fault.
    pub fn restarts(&self) -> u64 {
        self.restarts.load(Ordering::Relaxed)
    }
    /// Faults so far.
    pub fn faults(&self) -> u64 {
        self.faults.load(Ordering::Relaxed)
    }
    /// Requests sent so far (handshakes not counted).
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    fn checkout(&self) -> Result<Worker, Fault> {
        let mut p = self.pool.lock().unwrap();
        loop {
            if let Some(w) = p.idle.pop() {
                return Ok(w);
            }
            if p.live < self.opts.workers.max(1) {
                p.live += 1;
                drop(p);
                return self.restart();
            }
            p = self.freed.wait(p).unwrap();
        }
    }

    /// Start a new process (its slot is already counted in `live`).
    fn restart(&self) -> Result<Worker, Fault> {
        let crash = |m: String| Fault {
            verdict: Verdict::Crash,
            message: m,
            stderr: String::new(),
        };
        if self.dead.load(Ordering::Relaxed) {
            self.release_slot();
            return Err(crash(
                "the subject could not be restarted (3 attempts in a row); not asked".into(),
            ));
        }
        match start_worker(&self.opts, &self.shared_stderr) {
            Ok((w, _, _)) => {
                self.failed_restarts.store(0, Ordering::Relaxed);
                Ok(w)
            }
            Err(e) => {
                self.release_slot();
                if self.failed_restarts.fetch_add(1, Ordering::Relaxed) + 1 >= 3 {
                    self.dead.store(true, Ordering::Relaxed);
                }
                Err(crash(format!("restarting the subject failed: {e}")))
            }
        }
    }

    fn release_slot(&self) {
        let mut p = self.pool.lock().unwrap();
        p.live -= 1;
        self.freed.notify_one();
    }

    fn checkin(&self, w: Worker) {
        let mut p = self.pool.lock().unwrap();
        p.idle.push(w);
        self.freed.notify_one();
    }

    fn discard(&self, mut w: Worker) {
        w.kill();
        drop(w);
        self.restarts.fetch_add(1, Ordering::Relaxed);
        self.release_slot();
    }
}

impl Drop for ExecSubject {
    fn drop(&mut self) {
        // PROTOCOL.md: close stdin and let the subject exit; kill what is still there after 2 s.
        let mut p = self.pool.lock().unwrap();
        let mut ws: Vec<Worker> = p.idle.drain(..).collect();
        for w in &mut ws {
            w.tx = None;
        }
        let t0 = Instant::now();
        for w in &mut ws {
            while t0.elapsed() < Duration::from_secs(2) {
                if let Ok(Some(_)) = w.child.try_wait() {
                    w.reaped = true;
                    unregister_pgid(w.child.id() as i32);
                    break;
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        // Drop kills the rest (and the process groups).
    }
}

/// The shapes a response must have: the value's and each requested gradient's.
#[derive(Clone, Debug)]
pub struct Expected {
    pub value: Vec<usize>,
    pub grads: BTreeMap<String, Vec<usize>>,
}

impl Expected {
    /// From a valid case; `None` for an invalid one (its answer should be an error).
    pub fn of(case: &Case) -> Option<Expected> {
        let checked = catalogue::validate(case).ok()?;
        Some(Expected {
            value: checked.value_shape(case.reduction()),
            grads: case
                .grad
                .iter()
                .filter_map(|g| case.inputs.get(g).map(|t| (g.clone(), t.shape.clone())))
                .collect(),
        })
    }
    fn numbers(&self) -> usize {
        let n = |s: &Vec<usize>| s.iter().product::<usize>();
        n(&self.value) + self.grads.values().map(n).sum::<usize>()
    }
}

impl Subject for ExecSubject {
    fn name(&self) -> String {
        format!("exec:{}", self.caps.name)
    }
    fn eval(&self, case: &Case) -> Result<Response, LossError> {
        match self.answer(case) {
            Ok(a) => a,
            Err(f) => Err(LossError::internal(format!("{}: {}", f.verdict, f.message))),
        }
    }
    fn capabilities(&self) -> Option<&Capabilities> {
        Some(&self.caps)
    }
    /// The last bytes any of its processes wrote to stderr (bounded).
    fn stderr_tail(&self) -> Option<String> {
        Some(self.shared_stderr.lock().unwrap().text())
    }
    fn answer(&self, case: &Case) -> Answer {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let expected = Expected::of(case);
        let numbers = expected.as_ref().map_or(
            case.inputs.values().map(Tensor::len).sum(),
            Expected::numbers,
        );
        let line = case.to_json().to_string();
        let timeout = request_timeout(self.opts.timeout, line.len(), numbers);
        let max_line = self.opts.max_line + 64 * numbers;
        let mut w = self.checkout().inspect_err(|_| {
            self.faults.fetch_add(1, Ordering::Relaxed);
        })?;
        let fault = match w.roundtrip(&line, timeout, max_line) {
            Ok(resp) => match decode_response(&resp, case, expected.as_ref()) {
                Ok(a) => {
                    self.checkin(w);
                    return Ok(a);
                }
                Err(m) => Fault {
                    verdict: Verdict::Protocol,
                    message: m,
                    stderr: w.stderr_tail(false),
                },
            },
            Err((verdict, m)) => {
                if verdict == Verdict::Hang {
                    w.kill();
                }
                Fault {
                    verdict,
                    message: m,
                    stderr: w.stderr_tail(verdict == Verdict::Crash),
                }
            }
        };
        self.faults.fetch_add(1, Ordering::Relaxed);
        self.discard(w);
        Err(fault)
    }
}

// ---------------------------------------------------------------------------------------------
// Responses.

#[derive(Deserialize)]
struct WireTensor<'a> {
    shape: Vec<u64>,
    #[serde(borrow)]
    data: Vec<&'a RawValue>,
}

#[derive(Deserialize)]
struct WireResponse<'a> {
    id: Option<Value>,
    #[serde(borrow, default)]
    value: Option<WireTensor<'a>>,
    #[serde(borrow, default)]
    grad: Option<BTreeMap<String, WireTensor<'a>>>,
    error: Option<Value>,
    kind: Option<Value>,
}

/// Python's `json` writes NaN and infinities as the bare tokens `NaN`, `Infinity`,
/// `-Infinity`, which are not JSON: quote them (outside strings).
pub fn fix_bare_tokens(line: &str) -> std::borrow::Cow<'_, str> {
    if !line.contains("NaN") && !line.contains("Infinity") {
        return std::borrow::Cow::Borrowed(line);
    }
    let b = line.as_bytes();
    let mut out = String::with_capacity(line.len() + 16);
    let (mut i, mut start) = (0, 0);
    let mut in_str = false;
    while i < b.len() {
        let c = b[i];
        if in_str {
            if c == b'\\' {
                i += 2;
                continue;
            }
            if c == b'"' {
                in_str = false;
            }
            i += 1;
            continue;
        }
        if c == b'"' {
            in_str = true;
            i += 1;
            continue;
        }
        let tok = ["-Infinity", "Infinity", "NaN"]
            .into_iter()
            .find(|t| b[i..].starts_with(t.as_bytes()));
        match tok {
            Some(tok) => {
                out.push_str(&line[start..i]);
                out.push('"');
                out.push_str(tok);
                out.push('"');
                i += tok.len();
                start = i;
            }
            None => i += 1,
        }
    }
    out.push_str(&line[start..]);
    std::borrow::Cow::Owned(out)
}

/// Significant digits PROTOCOL.md allows a response number of `dtype` to have.
pub fn max_digits(dtype: Dtype) -> usize {
    match dtype {
        Dtype::F32 => 9,
        Dtype::F16 => 5,
        Dtype::Bf16 => 4,
    }
}

/// A decimal as (negative, digits without leading or trailing zeros, e) meaning
/// ±0.d₁d₂…×10^e; `None` when it is not a plain decimal number.
fn dec_parts(s: &str) -> Option<(bool, Vec<u8>, i64)> {
    let (neg, s) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let (mant, exp) = match s.find(['e', 'E']) {
        Some(k) => (&s[..k], s[k + 1..].parse::<i64>().ok()?),
        None => (s, 0),
    };
    let (int, frac) = match mant.find('.') {
        Some(k) => (&mant[..k], &mant[k + 1..]),
        None => (mant, ""),
    };
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    let mut digits = Vec::with_capacity(int.len() + frac.len());
    for c in int.bytes().chain(frac.bytes()) {
        if !c.is_ascii_digit() {
            return None;
        }
        digits.push(c - b'0');
    }
    // value = 0.(int frac) × 10^(len(int) + exp)
    let mut e = int.len() as i64 + exp;
    let lead = digits.iter().take_while(|&&d| d == 0).count();
    digits.drain(..lead);
    e -= lead as i64;
    while digits.last() == Some(&0) {
        digits.pop();
    }
    if digits.is_empty() {
        e = 0;
    }
    Some((neg, digits, e))
}

/// Exact comparison of a decimal string with a finite binary64.
fn cmp_decimal(s: &str, x: f64) -> Option<std::cmp::Ordering> {
    use std::cmp::Ordering::*;
    let a = dec_parts(s)?;
    let b = dec_parts(&format!("{:.1100e}", x))?; // Rust formats a given precision exactly
    let signed = |p: &(bool, Vec<u8>, i64)| {
        if p.1.is_empty() {
            0
        } else if p.0 {
            -1
        } else {
            1
        }
    };
    let (sa, sb) = (signed(&a), signed(&b));
    if sa != sb {
        return Some(sa.cmp(&sb));
    }
    if sa == 0 {
        return Some(Equal);
    }
    let mag = a.2.cmp(&b.2).then_with(|| a.1.cmp(&b.1));
    Some(if sa < 0 { mag.reverse() } else { mag })
}

/// The dtype value a response number stands for (PROTOCOL.md), or why it is not acceptable.
pub fn decode_number(raw: &str, dtype: Dtype) -> Result<f64, String> {
    let t = raw.trim();
    if t.starts_with('"') {
        let s: String = serde_json::from_str(t).map_err(|_| format!("{t} is not a number"))?;
        return decode_f64(&Value::String(s)).ok_or_else(|| format!("{t} is not a number"));
    }
    let x: f64 = t.parse().map_err(|_| format!("{t} is not a number"))?;
    if dtype.contains(x) {
        return Ok(x);
    }
    let digits = dec_parts(t).map_or(usize::MAX, |p| p.1.len());
    if digits > max_digits(dtype) {
        return Err(format!(
            "{t} is not a value of {dtype} and has more than {} significant digits",
            max_digits(dtype)
        ));
    }
    // The nearest dtype value to the decimal. Rounding the binary64 x (itself the nearest
    // binary64 to the decimal) agrees, except when x is exactly a midpoint of the dtype: then
    // the decimal's side of x decides.
    let r = dtype.round(x);
    let (lo, hi) = if r.is_infinite() {
        (dtype.max().copysign(x), r)
    } else if r < x {
        (r, dtype.next_up(r))
    } else {
        (dtype.next_down(r), r)
    };
    let (lo, hi) = if lo <= hi { (lo, hi) } else { (hi, lo) };
    let mid = if lo.is_infinite() || hi.is_infinite() {
        let m = dtype.max();
        let edge = m + dtype.ulp_at(m) / 2.0;
        if x.abs() == edge {
            Some(x)
        } else {
            None
        }
    } else if x - lo == hi - x {
        Some(x)
    } else {
        None
    };
    if mid.is_some() {
        match cmp_decimal(t, x) {
            Some(std::cmp::Ordering::Greater) => return Ok(hi),
            Some(std::cmp::Ordering::Less) => return Ok(lo),
            _ => {}
        }
    }
    Ok(r)
}

fn tensor_of(
    w: &WireTensor,
    dtype: Dtype,
    what: &str,
    want: Option<&Vec<usize>>,
) -> Result<Tensor, String> {
    let shape: Vec<usize> = w.shape.iter().map(|&d| d as usize).collect();
    if let Some(want) = want {
        if &shape != want {
            return Err(format!("{what} has shape {shape:?}, expected {want:?}"));
        }
    }
    let n = w
        .shape
        .iter()
        .try_fold(1u64, |a, &d| a.checked_mul(d))
        .ok_or_else(|| format!("{what}: shape {shape:?} overflows"))?;
    if n != w.data.len() as u64 {
        return Err(format!(
            "{what}: shape {shape:?} holds {n} elements but data has {}",
            w.data.len()
        ));
    }
    let mut data = Vec::with_capacity(w.data.len());
    for (k, r) in w.data.iter().enumerate() {
        data.push(decode_number(r.get(), dtype).map_err(|e| format!("{what}[{k}]: {e}"))?);
    }
    Ok(Tensor::float(dtype, shape, data))
}

/// Decode a response line to `case`: the answer, or (`Err`) why it is a protocol fault.
pub fn decode_response(
    line: &str,
    case: &Case,
    expected: Option<&Expected>,
) -> Result<Result<Response, LossError>, String> {
    let fixed = fix_bare_tokens(line);
    let w: WireResponse = serde_json::from_str(&fixed).map_err(|e| {
        if serde_json::from_str::<serde::de::IgnoredAny>(&fixed).is_ok() {
            format!("malformed response ({e}): {}", excerpt(line))
        } else {
            format!("the response is not JSON ({e}): {}", excerpt(line))
        }
    })?;
    match &w.id {
        Some(v) if v.as_u64() == Some(case.id) => {}
        Some(v) => {
            return Err(format!(
                "the response has id {v}, the request had {}",
                case.id
            ))
        }
        None => {
            return Err(format!(
                "the response has no id (the request had {})",
                case.id
            ))
        }
    }
    if let Some(e) = &w.error {
        let message = e
            .as_str()
            .map(String::from)
            .unwrap_or_else(|| e.to_string());
        let kind = match w.kind.as_ref().map(|k| k.as_str()) {
            None => ErrorKind::Internal,
            Some(Some("invalid_input")) => ErrorKind::InvalidInput,
            Some(Some("unsupported")) => ErrorKind::Unsupported,
            Some(Some("internal")) => ErrorKind::Internal,
            Some(_) => {
                return Err(format!(
                    "unknown error kind {} (invalid_input, unsupported or internal)",
                    w.kind.as_ref().unwrap()
                ))
            }
        };
        return Ok(Err(LossError { kind, message }));
    }
    let v = w
        .value
        .as_ref()
        .ok_or("the response has neither \"value\" nor \"error\"")?;
    let value = tensor_of(v, case.out_dtype, "value", expected.map(|e| &e.value))?;
    let mut grad = BTreeMap::new();
    for g in &case.grad {
        let t = w
            .grad
            .as_ref()
            .and_then(|m| m.get(g))
            .ok_or_else(|| format!("missing gradient for {g}"))?;
        let want = expected.and_then(|e| e.grads.get(g));
        grad.insert(
            g.clone(),
            tensor_of(t, case.dtype, &format!("grad.{g}"), want)?,
        );
    }
    Ok(Ok(Response {
        id: case.id,
        value,
        grad,
    }))
}

// ---------------------------------------------------------------------------------------------
// The subject side.

/// Serve `subject` over the exec protocol: read requests from `input`, one per line, and write
/// one response line per request to `output` (flushed), until end of input. The handshake
/// answers `caps`; a panic in the subject is an `internal` error. This is `losscheck serve`,
/// and the reference implementation of the protocol's subject side.
pub fn serve(
    subject: &dyn Subject,
    caps: &Capabilities,
    input: impl BufRead,
    mut output: impl Write,
) -> std::io::Result<()> {
    for line in input.lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let reply = serve_one(subject, caps, &line);
        writeln!(output, "{reply}")?;
        output.flush()?;
    }
    Ok(())
}

/// The response to one request line.
pub fn serve_one(subject: &dyn Subject, caps: &Capabilities, line: &str) -> Value {
    let v: Value = match serde_json::from_str(&fix_bare_tokens(line)) {
        Ok(v) => v,
        Err(e) => {
            return json!({"id": null, "error": format!("the request is not JSON: {e}"), "kind": "invalid_input"})
        }
    };
    let id = v.get("id").and_then(Value::as_u64).unwrap_or(0);
    match v.get("op").and_then(Value::as_str) {
        Some("hello") => return caps.to_json(),
        Some("eval") | None => {}
        Some(op) => {
            return LossError::invalid(format!("unknown op {op:?} (hello, eval)")).to_json(id);
        }
    }
    let case = match Case::from_json(&v) {
        Ok((c, _)) => c,
        Err(e) => return e.to_json(id),
    };
    if !caps.losses.contains_key(&case.loss) {
        return LossError::unsupported(format!("{} does not implement {}", caps.name, case.loss))
            .to_json(id);
    }
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| subject.eval(&case)));
    match r {
        Ok(Ok(resp)) => resp.to_json(),
        Ok(Err(e)) => e.to_json(id),
        Err(p) => {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "panic".into());
            LossError::internal(format!("the subject panicked: {msg}")).to_json(id)
        }
    }
}

/// Quote a string for `sh` (single quotes).
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:=@%+,".contains(&b))
    {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', "'\\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_tokens_are_quoted_outside_strings() {
        assert_eq!(
            fix_bare_tokens(r#"{"a":[NaN,-Infinity,Infinity],"b":"NaN x"}"#),
            r#"{"a":["NaN","-Infinity","Infinity"],"b":"NaN x"}"#
        );
        assert_eq!(fix_bare_tokens(r#"{"b":"a\"NaN"}"#), r#"{"b":"a\"NaN"}"#);
    }

    #[test]
    fn numbers_follow_the_protocol() {
        assert_eq!(decode_number("0.1", Dtype::F32).unwrap(), 0.1f32 as f64);
        assert_eq!(
            decode_number("0.100000001", Dtype::F32).unwrap(),
            0.1f32 as f64
        );
        assert!(decode_number("0.1000000001", Dtype::F32).is_err());
        assert_eq!(
            decode_number("0.10000000149011612", Dtype::F32).unwrap(),
            0.1f32 as f64
        );
        assert_eq!(decode_number("1.500000000000", Dtype::F16).unwrap(), 1.5);
        assert!(decode_number("0.1", Dtype::F16).is_ok());
        assert!(decode_number("0.123456", Dtype::F16).is_err());
        assert!(decode_number("\"nan\"", Dtype::Bf16).unwrap().is_nan());
        assert_eq!(
            decode_number("\"-inf\"", Dtype::F32).unwrap(),
            f64::NEG_INFINITY
        );
        assert_eq!(decode_number("1e39", Dtype::F32).unwrap(), f64::INFINITY);
        assert_eq!(
            decode_number("-0.0", Dtype::F16).unwrap().to_bits(),
            (-0.0f64).to_bits()
        );
        // a decimal just above a bf16 midpoint (1 + 2^-8 = 1.00390625) whose binary64 is the
        // midpoint itself would round to even (1.0) through binary64; the exact rule says up.
        let d = "1.00390625000000000001";
        assert_eq!(d.parse::<f64>().unwrap(), 1.00390625);
        assert_eq!(
            cmp_decimal(d, 1.00390625),
            Some(std::cmp::Ordering::Greater)
        );
        assert_eq!(
            cmp_decimal("1.00390625", 1.00390625),
            Some(std::cmp::Ordering::Equal)
        );
        assert_eq!(cmp_decimal("-2e-3", -0.001), Some(std::cmp::Ordering::Less));
    }

    #[test]
    fn responses_are_checked() {
        let mut case = Case::new("mse", Dtype::F16).unwrap();
        case.id = 3;
        case.inputs.insert(
            "pred".into(),
            Tensor::float(Dtype::F16, vec![2], vec![1.0, 2.0]),
        );
        case.inputs.insert(
            "target".into(),
            Tensor::float(Dtype::F16, vec![2], vec![0.0, 0.0]),
        );
        case.grad = vec!["pred".into()];
        let ex = Expected::of(&case).unwrap();
        let ok = r#"{"id":3,"value":{"shape":[],"data":[2.5]},"grad":{"pred":{"shape":[2],"data":[1.0,NaN]}}}"#;
        let r = decode_response(ok, &case, Some(&ex)).unwrap().unwrap();
        assert_eq!(r.value.get_f64(0), 2.5);
        assert!(r.grad["pred"].get_f64(1).is_nan());
        let bad_id = ok.replace("\"id\":3", "\"id\":4");
        assert!(decode_response(&bad_id, &case, Some(&ex))
            .unwrap_err()
            .contains("id"));
        let bad_shape = ok.replace("\"shape\":[2]", "\"shape\":[1,2]");
        assert!(decode_response(&bad_shape, &case, Some(&ex))
            .unwrap_err()
            .contains("shape"));
        assert!(decode_response("garbage", &case, Some(&ex))
            .unwrap_err()
            .contains("not JSON"));
        let err = r#"{"id":3,"error":"nope","kind":"unsupported"}"#;
        assert_eq!(
            decode_response(err, &case, Some(&ex))
                .unwrap()
                .unwrap_err()
                .kind,
            ErrorKind::Unsupported
        );
        let no_grad = r#"{"id":3,"value":{"shape":[],"data":[2.5]}}"#;
        assert!(decode_response(no_grad, &case, Some(&ex))
            .unwrap_err()
            .contains("missing gradient"));
        let not_f16 = ok.replace("2.5", "2.5001");
        assert!(decode_response(&not_f16, &case, Some(&ex)).is_ok()); // 5 digits: nearest f16
        let not_f16 = ok.replace("2.5", "2.50001");
        assert!(decode_response(&not_f16, &case, Some(&ex)).is_err());
    }

    #[test]
    fn shell_quoting() {
        assert_eq!(shell_quote("python3"), "python3");
        assert_eq!(shell_quote("python3 x.py"), "'python3 x.py'");
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
    }
}
