//! `opsd-fuzz`: runs the fuzz targets on stable Rust.
//!
//! ```sh
//! cargo run --release -p opsd-fuzz -- --target all --seconds 600     # each target, 10 minutes
//! cargo run --release -p opsd-fuzz -- --target grpc --replay FILE    # one input
//! ```

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use opsd_fuzz::driver::{self, Options};

#[derive(Debug, Parser)]
#[command(
    name = "opsd-fuzz",
    about = "Fuzz opsd's inputs (stable Rust, no instrumentation)"
)]
struct Args {
    /// A target name, or `all` for each in turn.
    #[arg(long, default_value = "all")]
    target: String,
    /// How long to run each target.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Stop each target after this many executions.
    #[arg(long)]
    max_executions: Option<u64>,
    /// The generator's seed; the same seed and corpus give the same inputs.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Longest input the mutator makes, in bytes.
    #[arg(long, default_value_t = 4096)]
    max_len: usize,
    /// An input running longer than this many seconds is reported as a hang.
    #[arg(long, default_value_t = 10)]
    input_timeout: u64,
    /// Write inputs that show a new behaviour here (to review and add to the corpus).
    #[arg(long)]
    save_new: Option<PathBuf>,
    /// Where a failing input is written.
    #[arg(long, default_value = "fuzz-failures")]
    failures: PathBuf,
    /// Print progress every this many seconds.
    #[arg(long, default_value_t = 30)]
    progress: u64,
    /// Run these files through the target once each, and say what they did.
    #[arg(long, num_args = 1..)]
    replay: Vec<PathBuf>,
    /// List the targets and exit.
    #[arg(long)]
    list: bool,
    /// Write the built-in seeds into the corpus directories and exit.
    #[arg(long)]
    write_seeds: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.list {
        for target in opsd_fuzz::targets() {
            println!("{:<12} {}", target.name, target.about);
        }
        return ExitCode::SUCCESS;
    }
    let targets: Vec<_> = if args.target == "all" {
        opsd_fuzz::targets().iter().collect()
    } else {
        match opsd_fuzz::target(&args.target) {
            Some(target) => vec![target],
            None => {
                eprintln!("opsd-fuzz: no target {} (see --list)", args.target);
                return ExitCode::from(2);
            }
        }
    };
    if args.write_seeds {
        for target in &targets {
            let dir = opsd_fuzz::corpus_dir(target.name);
            for (name, bytes) in opsd_fuzz::seeds::seeds(target.name) {
                if let Err(e) = std::fs::create_dir_all(&dir)
                    .and_then(|()| std::fs::write(dir.join(&name), bytes))
                {
                    eprintln!("opsd-fuzz: cannot write {}: {e}", dir.join(&name).display());
                    return ExitCode::FAILURE;
                }
            }
            println!("{}: seeds written to {}", target.name, dir.display());
        }
        return ExitCode::SUCCESS;
    }
    if !args.replay.is_empty() {
        let [target] = targets.as_slice() else {
            eprintln!("opsd-fuzz: --replay needs one --target");
            return ExitCode::from(2);
        };
        let mut failed = false;
        for file in &args.replay {
            let input = match std::fs::read(file) {
                Ok(input) => input,
                Err(e) => {
                    eprintln!("opsd-fuzz: cannot read {}: {e}", file.display());
                    return ExitCode::FAILURE;
                }
            };
            match driver::run_one(target, &input) {
                Ok(label) => println!("{}: {label}", file.display()),
                Err(message) => {
                    println!("{}: FAILED: {message}", file.display());
                    failed = true;
                }
            }
        }
        return if failed {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        };
    }

    let mut failed = false;
    let mut total = 0;
    for target in targets {
        let corpus = match opsd_fuzz::read_corpus(&opsd_fuzz::corpus_dir(target.name)) {
            Ok(files) => files
                .into_iter()
                .map(|(_, bytes)| bytes)
                .collect::<Vec<_>>(),
            Err(e) => {
                eprintln!("opsd-fuzz: cannot read the {} corpus: {e}", target.name);
                return ExitCode::FAILURE;
            }
        };
        let options = Options {
            duration: Duration::from_secs(args.seconds),
            max_executions: args.max_executions.unwrap_or(u64::MAX),
            seed: args.seed,
            max_len: args.max_len,
            input_timeout: Duration::from_secs(args.input_timeout),
            save_new: args.save_new.as_ref().map(|dir| dir.join(target.name)),
            failures_dir: Some(args.failures.clone()),
            progress: (args.progress > 0).then(|| Duration::from_secs(args.progress)),
        };
        let report = driver::run(target, &corpus, &options);
        total += report.executions;
        println!("{}", report.summary());
        if let Some(failure) = &report.failure {
            failed = true;
            println!(
                "  input: {}\n  saved: {}\n  replay: cargo run --release -p opsd-fuzz -- --target {} --replay {}",
                driver::escape(&failure.input),
                failure
                    .saved
                    .as_ref()
                    .map_or("(not saved)".to_owned(), |p| p.display().to_string()),
                target.name,
                failure
                    .saved
                    .as_ref()
                    .map_or("FILE".to_owned(), |p| p.display().to_string()),
            );
        }
    }
    println!("total: {total} executions");
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
