//! A real `opsd` process, for tests that kill it, restart it, or run several.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

/// Log lines kept per process, printed when a test wants to show what happened.
const LOG_LINES: usize = 200;

/// A real opsd process on a fresh port. Killed (SIGKILL) when dropped, so a
/// failing test never leaves one behind.
pub struct Process {
    child: Option<Child>,
    pub endpoint: String,
    log: Arc<Mutex<VecDeque<String>>>,
}

impl Process {
    /// The SQLite store in `data_dir`.
    pub fn start(data_dir: &std::path::Path) -> Self {
        Self::start_with(&["--data-dir", data_dir.to_str().unwrap()])
    }

    /// Listens on 127.0.0.1:0 unless `args` names a `--listen` address.
    pub fn start_with(args: &[&str]) -> Self {
        Self::start_with_env(args, &[])
    }

    /// As [`Process::start_with`], with these environment variables too.
    pub fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Self {
        let listen: &[&str] = if args.contains(&"--listen") {
            &[]
        } else {
            &["--listen", "127.0.0.1:0"]
        };
        let mut child = Command::new(env!("CARGO_BIN_EXE_opsd"))
            .args(listen)
            .args(args)
            .env("OPSD_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let log = Arc::new(Mutex::new(VecDeque::with_capacity(LOG_LINES)));
        let keep = |log: &Mutex<VecDeque<String>>, line: String| {
            let mut log = log.lock().unwrap();
            if log.len() == LOG_LINES {
                log.pop_front();
            }
            log.push_back(line);
        };
        let endpoint = loop {
            let Some(line) = lines.next() else {
                let tail: Vec<_> = log.lock().unwrap().iter().cloned().collect();
                panic!("opsd exited before listening:\n{}", tail.join("\n"));
            };
            let line = line.unwrap();
            keep(&log, line.clone());
            if let Some(rest) = line.split("address=").nth(1) {
                break rest.split_whitespace().next().unwrap().to_owned();
            }
            // The JSON log format.
            if let Some(rest) = line.split("\"address\":\"").nth(1) {
                break rest.split('"').next().unwrap().to_owned();
            }
        };
        // Keep draining the log so the child never blocks on a full pipe.
        let kept = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                keep(&kept, line);
            }
        });
        Self {
            child: Some(child),
            endpoint,
            log,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("process is running").id()
    }

    /// Whether the process has not exited.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|child| matches!(child.try_wait(), Ok(None)))
    }

    /// The last lines the process logged.
    pub fn log_tail(&self) -> String {
        let log = self.log.lock().unwrap();
        log.iter().cloned().collect::<Vec<_>>().join("\n")
    }

    /// SIGTERM, then waits off the runtime thread: the server's graceful
    /// shutdown needs this process's client connections to answer its GOAWAY.
    pub async fn terminate(mut self) {
        let mut child = self.child.take().expect("process is running");
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let exit = tokio::task::spawn_blocking(move || child.wait().unwrap())
            .await
            .unwrap();
        assert!(
            exit.success(),
            "clean shutdown exits 0, got {exit}; log:\n{}",
            self.log_tail()
        );
    }

    /// SIGKILL: no shutdown code runs, as in a crash or a power cut of the process.
    pub async fn kill_9(mut self) {
        let mut child = self.child.take().expect("process is running");
        child.kill().unwrap();
        tokio::task::spawn_blocking(move || child.wait().unwrap())
            .await
            .unwrap();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
