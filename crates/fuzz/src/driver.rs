//! The mutation loop: start from the corpus, mutate a pool member, run it,
//! keep it when it shows a behaviour label not seen before, stop at a broken
//! property (a panic), an input that runs too long, or the time or count bound.

use std::collections::{BTreeMap, HashSet};
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::Target;
use crate::mutate::Mutator;

/// Most inputs kept in the pool beside the corpus.
const MAX_POOL: usize = 20_000;

#[derive(Clone, Debug)]
pub struct Options {
    /// Stop after this long.
    pub duration: Duration,
    /// Stop after this many executions.
    pub max_executions: u64,
    pub seed: u64,
    /// Longest input the mutator makes.
    pub max_len: usize,
    /// One input running longer than this is a failure (a hang).
    pub input_timeout: Duration,
    /// Where inputs with new behaviour are written (none: kept in memory only).
    pub save_new: Option<PathBuf>,
    /// Where a failing input is written.
    pub failures_dir: Option<PathBuf>,
    /// Print progress every this often.
    pub progress: Option<Duration>,
}

impl Options {
    pub fn bounded(duration: Duration, seed: u64) -> Self {
        Self {
            duration,
            max_executions: u64::MAX,
            seed,
            max_len: 4096,
            input_timeout: Duration::from_secs(10),
            save_new: None,
            failures_dir: None,
            progress: None,
        }
    }
}

/// A broken property: the input and the panic message.
#[derive(Clone, Debug)]
pub struct Failure {
    pub input: Vec<u8>,
    pub message: String,
    /// Where the input was written, if it was.
    pub saved: Option<PathBuf>,
}

#[derive(Clone, Debug)]
pub struct Report {
    pub target: &'static str,
    pub executions: u64,
    pub elapsed: Duration,
    /// Distinct behaviour labels seen, with how often.
    pub behaviours: BTreeMap<String, u64>,
    pub corpus: usize,
    pub pool: usize,
    pub failure: Option<Failure>,
}

impl Report {
    pub fn summary(&self) -> String {
        format!(
            "{}: {} executions in {:.1}s ({:.0}/s), {} behaviours, corpus {}, pool {}, {}",
            self.target,
            self.executions,
            self.elapsed.as_secs_f64(),
            self.executions as f64 / self.elapsed.as_secs_f64().max(1e-9),
            self.behaviours.len(),
            self.corpus,
            self.pool,
            match &self.failure {
                None => "no failures".to_owned(),
                Some(f) => format!("FAILED: {}", f.message),
            }
        )
    }
}

/// Runs one input, turning a panic into its message.
pub fn run_one(target: &Target, input: &[u8]) -> Result<String, String> {
    std::panic::catch_unwind(AssertUnwindSafe(|| (target.run)(input))).map_err(|payload| {
        payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_else(|| "panic with a non-string payload".to_owned())
    })
}

/// Fuzzes `target` from `corpus` until a bound in `options` or a failure.
pub fn run(target: &'static Target, corpus: &[Vec<u8>], options: &Options) -> Report {
    let started = Instant::now();
    let mut report = Report {
        target: target.name,
        executions: 0,
        elapsed: Duration::ZERO,
        behaviours: BTreeMap::new(),
        corpus: corpus.len(),
        pool: 0,
        failure: None,
    };
    let watchdog = Watchdog::start(target.name, options);
    let mut pool: Vec<Vec<u8>> = corpus.to_vec();
    if pool.is_empty() {
        pool.push(Vec::new());
    }
    let mut seen_inputs: HashSet<Vec<u8>> = pool.iter().cloned().collect();
    let mut mutator = Mutator::new(
        StdRng::seed_from_u64(options.seed),
        target.dictionary,
        options.max_len,
    );
    let mut last_progress = Instant::now();

    // The corpus first, as it is: each of these must pass.
    let mut queue: std::collections::VecDeque<Vec<u8>> = corpus.iter().cloned().collect();
    loop {
        if started.elapsed() >= options.duration || report.executions >= options.max_executions {
            break;
        }
        let input = match queue.pop_front() {
            Some(input) => input,
            None => {
                let base = &pool[mutator.rng().random_range(0..pool.len())];
                let other = &pool[mutator.rng().random_range(0..pool.len())];
                let (base, other) = (base.clone(), other.clone());
                mutator.mutate(&base, &other)
            }
        };
        watchdog.begin(&input);
        let outcome = run_one(target, &input);
        watchdog.end();
        report.executions += 1;
        match outcome {
            Ok(label) => {
                let count = report.behaviours.entry(label).or_insert(0);
                *count += 1;
                if *count == 1 && pool.len() < MAX_POOL && seen_inputs.insert(input.clone()) {
                    if let Some(dir) = &options.save_new {
                        let _ = save(dir, "new", &input);
                    }
                    pool.push(input);
                }
            }
            Err(message) => {
                let saved = options
                    .failures_dir
                    .as_ref()
                    .and_then(|dir| save(dir, target.name, &input).ok());
                report.failure = Some(Failure {
                    input,
                    message,
                    saved,
                });
                break;
            }
        }
        if let Some(every) = options.progress
            && last_progress.elapsed() >= every
        {
            last_progress = Instant::now();
            eprintln!(
                "{}: {} executions, {:.0}s, {} behaviours, pool {}",
                target.name,
                report.executions,
                started.elapsed().as_secs_f64(),
                report.behaviours.len(),
                pool.len()
            );
        }
    }
    watchdog.stop();
    report.elapsed = started.elapsed();
    report.pool = pool.len();
    report
}

/// Writes `input` under a name made of `prefix` and its content hash.
pub fn save(dir: &std::path::Path, prefix: &str, input: &[u8]) -> std::io::Result<PathBuf> {
    use std::hash::{Hash, Hasher};
    std::fs::create_dir_all(dir)?;
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    input.hash(&mut hasher);
    let path = dir.join(format!("{prefix}-{:016x}", hasher.finish()));
    std::fs::write(&path, input)?;
    Ok(path)
}

/// Fails the run when one input takes longer than the timeout: a hang is a
/// finding too. It cannot stop the input, so it reports and exits.
struct Watchdog {
    shared: Arc<WatchdogState>,
    thread: Option<std::thread::JoinHandle<()>>,
}

struct WatchdogState {
    /// Milliseconds since `epoch` when the running input started; 0 when idle.
    started_ms: AtomicU64,
    input: Mutex<Vec<u8>>,
    stop: AtomicBool,
    epoch: Instant,
}

impl Watchdog {
    fn start(target: &'static str, options: &Options) -> Self {
        let shared = Arc::new(WatchdogState {
            started_ms: AtomicU64::new(0),
            input: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
            epoch: Instant::now(),
        });
        let timeout = options.input_timeout;
        let failures_dir = options.failures_dir.clone();
        let thread = {
            let shared = Arc::clone(&shared);
            std::thread::spawn(move || {
                while !shared.stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(50));
                    let started = shared.started_ms.load(Ordering::Relaxed);
                    if started == 0 {
                        continue;
                    }
                    let now = shared.epoch.elapsed().as_millis() as u64;
                    if now.saturating_sub(started) > timeout.as_millis() as u64 {
                        let input = shared.input.lock().map(|i| i.clone()).unwrap_or_default();
                        let saved = failures_dir
                            .as_ref()
                            .and_then(|dir| save(dir, &format!("{target}-hang"), &input).ok());
                        eprintln!(
                            "{target}: one input ran longer than {timeout:?} (saved: {saved:?}): {}",
                            escape(&input)
                        );
                        std::process::exit(3);
                    }
                }
            })
        };
        Self {
            shared,
            thread: Some(thread),
        }
    }

    fn begin(&self, input: &[u8]) {
        if let Ok(mut current) = self.shared.input.lock() {
            current.clear();
            current.extend_from_slice(input);
        }
        let now = (self.shared.epoch.elapsed().as_millis() as u64).max(1);
        self.shared.started_ms.store(now, Ordering::Relaxed);
    }

    fn end(&self) {
        self.shared.started_ms.store(0, Ordering::Relaxed);
    }

    fn stop(mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Bytes as a readable literal: printable ASCII as is, the rest as `\xNN`.
pub fn escape(input: &[u8]) -> String {
    input.escape_ascii().to_string()
}
