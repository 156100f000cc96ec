//! Test support: a throwaway PostgreSQL cluster for the tests of one process.
//!
//! [`postgres`] gives each caller a fresh, empty database. The server comes
//! from `OPSD_TEST_DATABASE_URL` when set (its user must be allowed to create
//! databases), or else is started from the installed PostgreSQL binaries on a
//! free loopback port, once per test process, and torn down when that process
//! exits. With neither available the caller is told to skip, loudly, unless
//! `OPSD_REQUIRE_POSTGRES=1` (set by CI), which turns the skip into a failure.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// Where a test's own database is, and how to reach the server as its admin.
#[derive(Clone, Debug)]
pub struct TestDatabase {
    /// `postgres://…/opsd_test_…`: an empty database of this test's own.
    pub url: String,
    /// The server's admin URL (database `postgres`).
    pub admin_url: String,
}

/// A fresh database, or `None` when PostgreSQL is unavailable and the caller
/// should skip (already announced on stderr).
pub async fn postgres() -> Option<TestDatabase> {
    let admin_url = match shared_server() {
        Ok(url) => url.clone(),
        Err(reason) => return unavailable(reason),
    };
    let name = format!("opsd_test_{:016x}", rand::random::<u64>());
    let (client, connection) = tokio_postgres::connect(&admin_url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to test postgres at {admin_url}: {e}"));
    let connection = tokio::spawn(connection);
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap_or_else(|e| panic!("cannot create test database {name}: {e}"));
    drop(client);
    let _ = connection.await;
    Some(TestDatabase {
        url: with_database(&admin_url, &name),
        admin_url,
    })
}

/// A cluster of the caller's own, for tests that stop and start the server;
/// stopped and removed when dropped. Never `OPSD_TEST_DATABASE_URL`'s server.
pub fn dedicated_cluster() -> Option<Cluster> {
    Cluster::launch().map_or_else(|reason| unavailable(&reason), Some)
}

/// A dedicated cluster set up as `setup` says (settings, pg_hba.conf, files).
pub fn dedicated_cluster_with(setup: ClusterSetup) -> Option<Cluster> {
    Cluster::launch_with(setup).map_or_else(|reason| unavailable(&reason), Some)
}

/// What a dedicated cluster has beyond the defaults.
#[derive(Clone, Debug, Default)]
pub struct ClusterSetup {
    /// `name = value` lines appended to postgresql.conf.
    pub settings: Vec<String>,
    /// The whole pg_hba.conf, instead of initdb's (trust on loopback).
    pub hba: Option<String>,
    /// Files written into the data directory (readable by the server only).
    pub files: Vec<(String, String)>,
    /// The admin URL's query (`sslmode=require` for a cluster that refuses clear text).
    pub admin_query: Option<String>,
    /// A streaming standby of the primary on this port (pg_basebackup) instead of initdb.
    standby_of: Option<u16>,
}

/// A cluster that speaks TLS only (certificate and key from `certs`, which
/// must name `127.0.0.1` and `localhost`) and refuses clear-text TCP
/// connections; role `opsd_cert` must log in with a client certificate of
/// `certs` (CN `opsd_cert`). The unix socket ([`Cluster::socket_url`]) stays trusted.
pub fn tls_cluster(certs: &TestCertificates) -> Option<Cluster> {
    let cluster = dedicated_cluster_with(ClusterSetup {
        settings: vec![
            "ssl = on".into(),
            "ssl_cert_file = 'server.crt'".into(),
            "ssl_key_file = 'server.key'".into(),
            "ssl_ca_file = 'ca.crt'".into(),
        ],
        hba: Some(
            "local all all trust\n\
             hostssl all opsd_cert 127.0.0.1/32 cert\n\
             hostssl all all 127.0.0.1/32 trust\n\
             hostnossl all all 127.0.0.1/32 reject\n\
             host all all ::1/128 reject\n"
                .into(),
        ),
        files: vec![
            ("server.crt".into(), certs.cert_pem.clone()),
            ("server.key".into(), certs.key_pem.clone()),
            ("ca.crt".into(), certs.ca_pem.clone()),
        ],
        admin_query: Some("sslmode=require".into()),
        standby_of: None,
    })?;
    cluster.psql("postgres", "CREATE ROLE opsd_cert LOGIN SUPERUSER");
    Some(cluster)
}

fn unavailable<T>(reason: &str) -> Option<T> {
    if std::env::var("OPSD_REQUIRE_POSTGRES").as_deref() == Ok("1") {
        panic!("postgres tests are required (OPSD_REQUIRE_POSTGRES=1) but {reason}");
    }
    eprintln!("SKIPPED: postgres test skipped because {reason}");
    None
}

fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    // postgres://user@host:port[/db]: replace or add the path.
    let authority_end = base
        .find("://")
        .map(|i| i + 3)
        .and_then(|start| base[start..].find('/').map(|i| start + i))
        .unwrap_or(base.len());
    let mut out = format!("{}/{database}", &base[..authority_end]);
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    out
}

/// The admin URL of the server every test of this process shares.
fn shared_server() -> Result<&'static String, &'static str> {
    static SERVER: OnceLock<Result<String, String>> = OnceLock::new();
    SERVER
        .get_or_init(|| match std::env::var("OPSD_TEST_DATABASE_URL") {
            Ok(url) if !url.is_empty() => Ok(url),
            // Never dropped: the watchdog stops it when this process exits.
            _ => Cluster::launch()
                .map(|cluster| std::mem::ManuallyDrop::new(cluster).admin_url.clone()),
        })
        .as_ref()
        .map_err(String::as_str)
}

/// Where the installed PostgreSQL server binaries (and pgbench) are.
pub fn postgres_bin_dir() -> Option<PathBuf> {
    if let Ok(dir) = std::env::var("OPSD_TEST_POSTGRES_BIN") {
        return Some(PathBuf::from(dir));
    }
    let mut candidates: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|bin| bin.join("pg_ctl").exists())
        .collect();
    candidates.sort();
    candidates.pop()
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Runs a PostgreSQL tool, as the `postgres` user when we are root (initdb refuses root).
fn pg_command(bin: &Path, tool: &str, as_postgres: bool) -> Command {
    if as_postgres {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(bin.join(tool));
        command
    } else {
        Command::new(bin.join(tool))
    }
}

impl Cluster {
    /// initdb, start on a free loopback port, and arrange the teardown.
    fn launch() -> Result<Cluster, String> {
        Self::launch_with(ClusterSetup::default())
    }

    /// initdb (or pg_basebackup, for a standby), the setup, start on a free
    /// loopback port, and arrange the teardown.
    fn launch_with(setup: ClusterSetup) -> Result<Cluster, String> {
        let bin = postgres_bin_dir().ok_or_else(|| {
        "no PostgreSQL server binaries were found (install postgresql, or set OPSD_TEST_DATABASE_URL)"
            .to_owned()
    })?;
        let as_postgres = is_root();
        // Outlives this function; the watchdog below removes it with the cluster.
        let base = tempfile::Builder::new()
            .prefix("opsd-test-pg-")
            .tempdir()
            .map_err(|e| format!("cannot create a temp dir: {e}"))?
            .keep();
        let data = base.join("data");
        let socket = base.join("socket");
        std::fs::create_dir_all(&socket).map_err(|e| e.to_string())?;
        let mut owned = vec![base.clone(), socket.clone()];
        owned.push(data.clone());
        std::fs::create_dir_all(&data).map_err(|e| e.to_string())?;
        // Every parent must be traversable by the postgres user.
        let chmod = Command::new("chmod")
            .args(["755"])
            .arg(&base)
            .arg(&socket)
            .status();
        if as_postgres {
            let status = Command::new("chown")
                .arg("-R")
                .arg("postgres:")
                .args(&owned)
                .status();
            if !matches!(status, Ok(s) if s.success()) {
                return Err("cannot hand the temp dir to the postgres user".into());
            }
        }
        if !matches!(chmod, Ok(s) if s.success()) {
            return Err("cannot make the temp dir traversable".into());
        }

        match setup.standby_of {
            None => {
                let initdb = pg_command(&bin, "initdb", as_postgres)
                    .arg("-D")
                    .arg(&data)
                    .args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"])
                    .stdout(Stdio::null())
                    .output()
                    .map_err(|e| format!("cannot run initdb: {e}"))?;
                if !initdb.status.success() {
                    return Err(format!(
                        "initdb failed: {}",
                        String::from_utf8_lossy(&initdb.stderr)
                    ));
                }
            }
            Some(primary_port) => base_backup(&bin, as_postgres, primary_port, &data)?,
        }
        prepare_data(&setup, &data, as_postgres)?;

        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("cannot find a free port: {e}"))?
            .port();
        let options = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c max_connections=300",
            socket.display()
        );
        let log = base.join("postgres.log");
        let start = pg_command(&bin, "pg_ctl", as_postgres)
            .arg("-D")
            .arg(&data)
            .args(["-o", &options, "-l"])
            .arg(&log)
            .args(["-w", "-t", "60", "start"])
            .stdout(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run pg_ctl: {e}"))?;
        if !start.status.success() {
            return Err(format!(
                "pg_ctl start failed: {} {}",
                String::from_utf8_lossy(&start.stderr),
                std::fs::read_to_string(&log).unwrap_or_default()
            ));
        }

        // The cluster must not outlive the test process, however that process ends.
        let pg_ctl = bin.join("pg_ctl");
        let log = log.clone();
        let stop = if as_postgres {
            format!(
                "runuser -u postgres -- {} -D {} -m immediate stop",
                pg_ctl.display(),
                data.display()
            )
        } else {
            format!(
                "{} -D {} -m immediate stop",
                pg_ctl.display(),
                data.display()
            )
        };
        // A test that died with the server frozen (SIGSTOP) leaves it unable to hear the stop.
        let thaw = format!(
            "pm=$(head -1 {data}/postmaster.pid 2>/dev/null); \
             [ -n \"$pm\" ] && kill -CONT $pm $(ps -o pid= --ppid $pm) 2>/dev/null",
            data = data.display()
        );
        let watchdog = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 1; done; {thaw}; {stop} >/dev/null 2>&1; rm -rf {base}",
            pid = std::process::id(),
            base = base.display()
        );
        Command::new("setsid")
            .args(["bash", "-c", &watchdog])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start the cluster watchdog: {e}"))?;

        let query = setup
            .admin_query
            .as_ref()
            .map(|q| format!("?{q}"))
            .unwrap_or_default();
        Ok(Cluster {
            admin_url: format!("postgres://postgres@127.0.0.1:{port}/postgres{query}"),
            port,
            socket,
            bin,
            base,
            data,
            log,
            options,
            as_postgres,
        })
    }
}

/// A PostgreSQL cluster this process started; it never outlives the process.
#[derive(Debug)]
pub struct Cluster {
    /// `postgres://postgres@127.0.0.1:PORT/postgres`, trusted, no password.
    pub admin_url: String,
    port: u16,
    socket: PathBuf,
    bin: PathBuf,
    base: PathBuf,
    data: PathBuf,
    log: PathBuf,
    /// The server options (port, socket dir), given again at every start.
    options: String,
    as_postgres: bool,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // A frozen server would not hear the stop.
        if let Some(pids) = self.try_processes() {
            signal(&pids, "CONT");
        }
        let _ = pg_command(&self.bin, "pg_ctl", self.as_postgres)
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.base);
    }
}

impl Cluster {
    /// A URL for `database` on this cluster.
    pub fn url(&self, database: &str) -> String {
        with_database(&self.admin_url, database)
    }

    /// The loopback port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `database` through the unix socket (key=value form): trusted, no TLS.
    pub fn socket_url(&self, database: &str) -> String {
        format!(
            "host={} port={} user=postgres dbname={database}",
            self.socket.display(),
            self.port
        )
    }

    /// Runs `sql` with psql through the unix socket; its output, unaligned
    /// and without headers. Panics when psql fails.
    pub fn psql(&self, database: &str, sql: &str) -> String {
        let output = pg_command(&self.bin, "psql", false)
            .arg("-h")
            .arg(&self.socket)
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                database,
            ])
            .args(["-v", "ON_ERROR_STOP=1", "-X", "-At", "-c", sql])
            .output()
            .expect("psql runs");
        assert!(
            output.status.success(),
            "psql {sql:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }

    /// Ends recovery: a standby becomes a primary.
    pub fn promote(&self) {
        self.pg_ctl(&["-w", "-t", "60", "promote"]);
    }

    /// Replaces this (stopped or dead) server's data with a fresh base backup
    /// of the primary on `primary_port`, and starts it as that primary's
    /// streaming standby.
    fn rebuild_as_standby_of(&self, primary_port: u16) {
        if let Some(pids) = self.try_processes()
            && pids.iter().any(|&pid| is_alive(pid))
        {
            self.stop();
        }
        std::fs::remove_dir_all(&self.data).expect("the old data directory goes");
        std::fs::create_dir_all(&self.data).unwrap();
        if self.as_postgres {
            let status = Command::new("chown")
                .arg("postgres:")
                .arg(&self.data)
                .status();
            assert!(
                matches!(status, Ok(s) if s.success()),
                "chown the data directory"
            );
        }
        base_backup(&self.bin, self.as_postgres, primary_port, &self.data)
            .unwrap_or_else(|e| panic!("{e}"));
        let _ = std::fs::remove_file(self.data.join("postmaster.pid"));
        self.start();
    }

    fn pg_ctl(&self, args: &[&str]) {
        let status = pg_command(&self.bin, "pg_ctl", self.as_postgres)
            .arg("-D")
            .arg(&self.data)
            .args(args)
            .stdout(Stdio::null())
            .output()
            .expect("pg_ctl runs");
        if !status.status.success() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(20).collect();
            panic!(
                "pg_ctl {args:?} failed: {}\nserver log, last lines first:\n{}",
                String::from_utf8_lossy(&status.stderr),
                tail.join("\n")
            );
        }
    }

    /// The server's main process, while it runs (for pinning or killing it).
    pub fn postmaster_pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.data.join("postmaster.pid"))
            .ok()?
            .lines()
            .next()?
            .trim()
            .parse()
            .ok()
    }

    /// Stops the server at once, as a crash or an outage would.
    pub fn stop(&self) {
        self.pg_ctl(&["-m", "immediate", "-w", "stop"]);
    }

    /// Starts it again with the options it had.
    pub fn start(&self) {
        let log = self.log.to_string_lossy().into_owned();
        self.pg_ctl(&["-o", &self.options, "-l", &log, "-w", "-t", "60", "start"]);
    }

    /// The postmaster and every process it started, postmaster first.
    fn processes(&self) -> Vec<u32> {
        self.try_processes()
            .expect("the cluster is running (postmaster.pid names its pid)")
    }

    fn try_processes(&self) -> Option<Vec<u32>> {
        let pid_file = std::fs::read_to_string(self.data.join("postmaster.pid")).ok()?;
        let postmaster: u32 = pid_file.lines().next()?.trim().parse().ok()?;
        let mut pids = vec![postmaster];
        pids.extend(children_of(postmaster));
        Some(pids)
    }

    /// SIGKILLs the postmaster and all its processes at once, as a crash of
    /// the database machine would, and waits until they are gone. The data
    /// directory is left as the crash left it; [`Cluster::start`] recovers it.
    pub fn kill_9(&self) {
        // Stopped first, the postmaster forks no backend behind our back.
        let postmaster = self.processes()[0];
        signal(&[postmaster], "STOP");
        let pids = self.processes();
        signal(&pids, "KILL");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while pids.iter().any(|&pid| is_alive(pid)) {
            assert!(
                std::time::Instant::now() < deadline,
                "postgres processes {pids:?} outlived SIGKILL for 30 s"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        // Until init reaps it, the dead postmaster's pid still answers kill -0,
        // and a new postmaster would take the lock file for a live one. It is
        // dead: clear the lock, as an operator would after a crash.
        if stat_fields(pids[0]).is_some() {
            let _ = std::fs::remove_file(self.data.join("postmaster.pid"));
            let socket_locks = std::fs::read_dir(self.base.join("socket"))
                .into_iter()
                .flatten()
                .filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().ends_with(".lock"));
            for lock in socket_locks {
                let _ = std::fs::remove_file(lock.path());
            }
        }
    }

    /// SIGSTOPs every server process: connections stay open but nothing
    /// answers, as when the database machine hangs or the network drops
    /// packets. [`Cluster::thaw`] resumes them.
    pub fn freeze(&self) {
        signal(&self.processes(), "STOP");
    }

    /// SIGCONTs what [`Cluster::freeze`] stopped (and any process started since).
    pub fn thaw(&self) {
        signal(&self.processes(), "CONT");
    }
}

/// A base backup of the primary on `primary_port` into `data`, set up to
/// stream from it (standby.signal, primary_conninfo).
fn base_backup(
    bin: &Path,
    as_postgres: bool,
    primary_port: u16,
    data: &Path,
) -> Result<(), String> {
    let backup = pg_command(bin, "pg_basebackup", as_postgres)
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &primary_port.to_string(),
            "-U",
            "postgres",
        ])
        .arg("-D")
        .arg(data)
        .args(["-R", "-X", "stream", "--no-sync", "-c", "fast"])
        .stdout(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run pg_basebackup: {e}"))?;
    if !backup.status.success() {
        return Err(format!(
            "pg_basebackup failed: {}",
            String::from_utf8_lossy(&backup.stderr)
        ));
    }
    // The server refuses a data directory others may read.
    let chmod = Command::new("chmod").arg("700").arg(data).status();
    if !matches!(chmod, Ok(s) if s.success()) {
        return Err("cannot chmod the data directory".into());
    }
    Ok(())
}

/// Settings, pg_hba.conf and files of `setup`, written into `data`.
fn prepare_data(setup: &ClusterSetup, data: &Path, as_postgres: bool) -> Result<(), String> {
    use std::io::Write as _;
    let mut written = Vec::new();
    if !setup.settings.is_empty() {
        let mut conf = std::fs::OpenOptions::new()
            .append(true)
            .open(data.join("postgresql.conf"))
            .map_err(|e| format!("cannot open postgresql.conf: {e}"))?;
        writeln!(conf, "\n{}", setup.settings.join("\n")).map_err(|e| e.to_string())?;
    }
    if let Some(hba) = &setup.hba {
        std::fs::write(data.join("pg_hba.conf"), hba).map_err(|e| e.to_string())?;
        written.push(data.join("pg_hba.conf"));
    }
    for (name, content) in &setup.files {
        let path = data.join(name);
        std::fs::write(&path, content).map_err(|e| format!("cannot write {name}: {e}"))?;
        let chmod = Command::new("chmod").arg("600").arg(&path).status();
        if !matches!(chmod, Ok(s) if s.success()) {
            return Err(format!("cannot chmod {name}"));
        }
        written.push(path);
    }
    if as_postgres && !written.is_empty() {
        let status = Command::new("chown")
            .arg("postgres:")
            .args(&written)
            .status();
        if !matches!(status, Ok(s) if s.success()) {
            return Err("cannot hand the cluster's files to the postgres user".into());
        }
    }
    Ok(())
}

/// A primary and a streaming standby that it replicates to synchronously
/// (`synchronous_standby_names = '*'`): a commit is acknowledged only once
/// the standby has flushed it. Both listen on loopback; [`ReplicatedPair::url`]
/// names both hosts, as a failover-aware client is configured.
pub struct ReplicatedPair {
    nodes: [Cluster; 2],
    primary: usize,
}

/// A primary with its synchronous standby, or `None` to skip (see [`postgres`]).
pub fn replicated_pair() -> Option<ReplicatedPair> {
    ReplicatedPair::launch().map_or_else(|reason| unavailable(&reason), Some)
}

impl ReplicatedPair {
    fn launch() -> Result<Self, String> {
        let primary = Cluster::launch_with(ClusterSetup {
            settings: vec!["wal_level = replica".into(), "max_wal_senders = 10".into()],
            ..ClusterSetup::default()
        })?;
        let standby = Cluster::launch_with(ClusterSetup {
            standby_of: Some(primary.port),
            ..ClusterSetup::default()
        })?;
        let pair = Self {
            nodes: [primary, standby],
            primary: 0,
        };
        pair.synchronous();
        Ok(pair)
    }

    /// Both hosts, primary first, for `database`; only the writable one is taken.
    pub fn url(&self, database: &str) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{},127.0.0.1:{}/{database}?target_session_attrs=read-write",
            self.nodes[0].port, self.nodes[1].port
        )
    }

    pub fn primary(&self) -> &Cluster {
        &self.nodes[self.primary]
    }

    pub fn standby(&self) -> &Cluster {
        &self.nodes[1 - self.primary]
    }

    /// The primary dies (kill -9 of all its processes); the standby is
    /// promoted and takes writes alone (synchronous replication off until
    /// [`ReplicatedPair::rebuild_standby`] gives it a standby again), as a
    /// failover manager in non-strict synchronous mode does.
    pub fn fail_over(&mut self) {
        self.primary().kill_9();
        self.primary = 1 - self.primary;
        let new = self.primary();
        new.promote();
        new.psql(
            "postgres",
            "ALTER SYSTEM SET synchronous_standby_names = ''",
        );
        new.psql("postgres", "SELECT pg_reload_conf()");
    }

    /// The dead former primary comes back as a fresh standby of the new one,
    /// and replication is synchronous again, with everything committed so far
    /// flushed on the standby.
    pub fn rebuild_standby(&self) {
        self.standby().rebuild_as_standby_of(self.primary().port);
        self.synchronous();
    }

    /// Turns synchronous replication on and waits (30 s at most) until the
    /// standby streams synchronously and has flushed all WAL written so far.
    fn synchronous(&self) {
        let primary = self.primary();
        primary.psql(
            "postgres",
            "ALTER SYSTEM SET synchronous_standby_names = '*'",
        );
        primary.psql("postgres", "SELECT pg_reload_conf()");
        let target = primary.psql("postgres", "SELECT pg_current_wal_lsn()");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let caught_up = primary.psql(
                "postgres",
                &format!(
                    "SELECT count(*) FROM pg_stat_replication WHERE sync_state = 'sync' \
                     AND flush_lsn >= '{target}'::pg_lsn"
                ),
            );
            if caught_up == "1" {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the standby did not catch up synchronously within 30 s"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}

/// PgBouncer in transaction mode in front of a cluster: each transaction
/// may run on another server connection, and a LISTEN is lost when its
/// transaction ends. Stopped when dropped, and when the test process exits.
pub struct PgBouncer {
    port: u16,
    pid_file: PathBuf,
    base: PathBuf,
}

/// PgBouncer (`pool_mode = transaction`) in front of `cluster`, or `None`
/// to skip (failing under `OPSD_REQUIRE_POSTGRES=1`) when it is not installed.
pub fn pgbouncer(cluster: &Cluster) -> Option<PgBouncer> {
    PgBouncer::launch(cluster).map_or_else(|reason| unavailable(&reason), Some)
}

impl PgBouncer {
    fn launch(cluster: &Cluster) -> Result<Self, String> {
        let binary = std::env::var_os("OPSD_TEST_PGBOUNCER")
            .map(PathBuf::from)
            .or_else(|| {
                ["/usr/sbin/pgbouncer", "/usr/bin/pgbouncer"]
                    .iter()
                    .map(PathBuf::from)
                    .find(|p| p.exists())
            })
            .ok_or("pgbouncer is not installed (apt-get install pgbouncer, or set OPSD_TEST_PGBOUNCER)")?;
        let as_postgres = is_root();
        let base = tempfile::Builder::new()
            .prefix("opsd-test-pgbouncer-")
            .tempdir()
            .map_err(|e| format!("cannot create a temp dir: {e}"))?
            .keep();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("cannot find a free port: {e}"))?
            .port();
        let pid_file = base.join("pgbouncer.pid");
        let config = base.join("pgbouncer.ini");
        std::fs::write(base.join("users.txt"), "\"postgres\" \"\"\n").map_err(|e| e.to_string())?;
        std::fs::write(
            &config,
            format!(
                "[databases]\n* = host=127.0.0.1 port={upstream}\n\n\
                 [pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n\
                 auth_type = trust\nauth_file = {base}/users.txt\npool_mode = transaction\n\
                 max_client_conn = 500\ndefault_pool_size = 8\n\
                 ignore_startup_parameters = extra_float_digits,options\n\
                 logfile = {base}/pgbouncer.log\npidfile = {pid}\n",
                upstream = cluster.port,
                base = base.display(),
                pid = pid_file.display(),
            ),
        )
        .map_err(|e| e.to_string())?;
        if as_postgres {
            let status = Command::new("chown")
                .arg("-R")
                .arg("postgres:")
                .arg(&base)
                .status();
            if !matches!(status, Ok(s) if s.success()) {
                return Err("cannot hand the pgbouncer dir to the postgres user".into());
            }
        }
        // It refuses to run as root.
        let mut command = if as_postgres {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(&binary);
            command
        } else {
            Command::new(&binary)
        };
        let started = command
            .arg("-d")
            .arg(&config)
            .stdout(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run pgbouncer: {e}"))?;
        if !started.status.success() {
            return Err(format!(
                "pgbouncer failed to start: {} {}",
                String::from_utf8_lossy(&started.stderr),
                std::fs::read_to_string(base.join("pgbouncer.log")).unwrap_or_default()
            ));
        }
        let watchdog = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 1; done; \
             kill $(cat {pid_file} 2>/dev/null) 2>/dev/null; sleep 1; rm -rf {base}",
            pid = std::process::id(),
            pid_file = pid_file.display(),
            base = base.display()
        );
        Command::new("setsid")
            .args(["bash", "-c", &watchdog])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start the pgbouncer watchdog: {e}"))?;
        // Daemonized: ready once it accepts connections.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if std::time::Instant::now() > deadline {
                return Err("pgbouncer did not listen within 30 s".into());
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        Ok(Self {
            port,
            pid_file,
            base,
        })
    }

    /// `database` through the pooler.
    pub fn url(&self, database: &str) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/{database}?sslmode=disable",
            self.port
        )
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        if let Some(pid) = std::fs::read_to_string(&self.pid_file)
            .ok()
            .and_then(|p| p.trim().parse::<u32>().ok())
        {
            signal(&[pid], "TERM");
        }
        let _ = std::fs::remove_dir_all(&self.base);
    }
}

/// Direct children of `parent`, from /proc.
fn children_of(parent: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| stat_fields(pid).is_some_and(|(_, ppid)| ppid == parent))
        .collect()
}

/// (state, parent pid) of a process, from /proc/PID/stat.
fn stat_fields(pid: u32) -> Option<(char, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((state, ppid))
}

/// Running, sleeping or stopped; gone and zombies are not alive.
fn is_alive(pid: u32) -> bool {
    stat_fields(pid).is_some_and(|(state, _)| state != 'Z' && state != 'X')
}

fn signal(pids: &[u32], name: &str) {
    // A process may exit between listing and signalling; the others get it.
    let _ = Command::new("kill")
        .arg(format!("-{name}"))
        .args(pids.iter().map(u32::to_string))
        .stderr(Stdio::null())
        .status();
}

/// A certificate authority and a server certificate it signed, for TLS tests.
pub struct TestCertificates {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
    /// A client certificate the CA signed, for CN `opsd_cert` (a database role).
    pub client_cert_pem: String,
    pub client_key_pem: String,
}

impl TestCertificates {
    /// A fresh CA, and a server certificate for `localhost` and `127.0.0.1`.
    pub fn new() -> Self {
        Self::for_names(&["localhost", "127.0.0.1"])
    }

    pub fn for_names(names: &[&str]) -> Self {
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "opsd test ca");
        let ca =
            rcgen::CertifiedIssuer::self_signed(ca_params, rcgen::KeyPair::generate().unwrap())
                .unwrap();
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let server_key = rcgen::KeyPair::generate().unwrap();
        let server = rcgen::CertificateParams::new(names)
            .unwrap()
            .signed_by(&server_key, &ca)
            .unwrap();
        let client_key = rcgen::KeyPair::generate().unwrap();
        let mut client_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        client_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "opsd_cert");
        client_params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let client = client_params.signed_by(&client_key, &ca).unwrap();
        Self {
            ca_pem: ca.pem(),
            cert_pem: server.pem(),
            key_pem: server_key.serialize_pem(),
            client_cert_pem: client.pem(),
            client_key_pem: client_key.serialize_pem(),
        }
    }

    /// Writes `ca.pem`, `cert.pem` and `key.pem` into `dir`.
    pub fn write_to(&self, dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
        let paths = (
            dir.join("ca.pem"),
            dir.join("cert.pem"),
            dir.join("key.pem"),
        );
        std::fs::write(&paths.0, &self.ca_pem).unwrap();
        std::fs::write(&paths.1, &self.cert_pem).unwrap();
        std::fs::write(&paths.2, &self.key_pem).unwrap();
        paths
    }
}

impl Default for TestCertificates {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn database_names_replace_or_extend_the_path() {
        assert_eq!(
            with_database("postgres://u@h:1/postgres", "x"),
            "postgres://u@h:1/x"
        );
        assert_eq!(with_database("postgres://u@h:1", "x"), "postgres://u@h:1/x");
        assert_eq!(
            with_database("postgres://u@h:1/db?sslmode=disable", "x"),
            "postgres://u@h:1/x?sslmode=disable"
        );
    }
}
