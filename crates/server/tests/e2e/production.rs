//! PostgreSQL as operators run it: TLS to the database, a primary that
//! fails over to its synchronous standby, PgBouncer in transaction mode,
//! and schema migrations run apart from the server. Every test runs the
//! real opsd binary against real servers started by the test kit.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use opsd_client::{Client, ClientError, Completion, NewOperation, OpsdOperation};
use opsd_proto::yandex::cloud::operation as ycop;
use tonic::Code;

use crate::process::Process;
use crate::support::env_size;

fn response(name: &str) -> Completion {
    let mut fields = std::collections::BTreeMap::new();
    fields.insert(
        "name".to_owned(),
        prost_types::Value {
            kind: Some(prost_types::value::Kind::StringValue(name.to_owned())),
        },
    );
    Completion::Response(opsd_client::pack_struct(&prost_types::Struct { fields }))
}

fn id_of(op: &OpsdOperation) -> String {
    op.operation.as_ref().unwrap().id.clone()
}

fn is_unavailable(e: &ClientError) -> bool {
    matches!(e, ClientError::Rpc(s) if s.code() == Code::Unavailable)
}

/// How an opsd run that should end by itself ended.
struct Exit {
    code: Option<i32>,
    output: String,
}

/// Runs opsd with `args` until it exits (60 s at most, then it is killed
/// and the test fails): for runs that must be refused, and for `opsd migrate`.
fn run_to_exit(args: &[&str]) -> Exit {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_opsd"))
        .args(args)
        .env("OPSD_LOG", "info")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let output = child.wait_with_output().unwrap();
            panic!(
                "opsd {args:?} did not exit within 60 s:\n{}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().unwrap();
    Exit {
        code: output.status.code(),
        output: format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    }
}

/// Runs opsd with `args` and asserts it refuses to start, saying `wanted`.
fn refused(args: &[&str], wanted: &str) -> String {
    let mut all = vec!["--listen", "127.0.0.1:0"];
    all.extend_from_slice(args);
    let exit = run_to_exit(&all);
    assert!(
        exit.code.is_some_and(|c| c != 0),
        "opsd {args:?} should refuse to start, got {:?}:\n{}",
        exit.code,
        exit.output
    );
    assert!(
        exit.output.contains(wanted),
        "opsd {args:?} should say {wanted:?}, said:\n{}",
        exit.output
    );
    exit.output
}

async fn completes_and_wakes(client: &Client) {
    let op = client.create(NewOperation::new("tls")).await.unwrap();
    let mut watch = client.watch(&id_of(&op)).await.unwrap();
    watch.message().await.unwrap().unwrap();
    let done = client.complete(&id_of(&op), response("tls")).await.unwrap();
    let heard = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match watch.message().await.unwrap() {
                Some(op) if op.operation.as_ref().unwrap().done => return op,
                Some(_) => {}
                None => panic!("the watch ended before done"),
            }
        }
    })
    .await
    .expect("the watcher heard of the completion");
    assert_eq!(heard, done);
}

/// `sslmode=verify-full` against a server that refuses clear text: opsd
/// serves, wakes watchers, and every connection it opens (the LISTEN one
/// too) is encrypted; `verify-ca` with a client certificate works on an
/// address the certificate does not name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_to_the_database_verify_full_and_client_certificates() {
    let certs = opsd_testkit::TestCertificates::for_names(&["localhost"]);
    let Some(cluster) = opsd_testkit::tls_cluster(&certs) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (ca, _, _) = certs.write_to(dir.path());
    let (client_cert, client_key) = (dir.path().join("client.pem"), dir.path().join("client.key"));
    std::fs::write(&client_cert, &certs.client_cert_pem).unwrap();
    std::fs::write(&client_key, &certs.client_key_pem).unwrap();
    let port = cluster.port();

    let url = format!(
        "postgres://postgres@localhost:{port}/postgres?sslmode=verify-full&sslrootcert={}",
        ca.display()
    );
    let server = Process::start_with(&["--store", &url]);
    let client = Client::connect(&server.endpoint).await.unwrap();
    completes_and_wakes(&client).await;
    let connections = |ssl: &str| {
        cluster.psql(
            "postgres",
            &format!(
                "SELECT count(*) FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) \
                 WHERE a.application_name = 'opsd' AND s.ssl = {ssl}"
            ),
        )
    };
    assert_eq!(connections("false"), "0", "no connection in clear text");
    assert_ne!(connections("true"), "0");
    let listening = cluster.psql(
        "postgres",
        "SELECT count(*) FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) \
         WHERE a.application_name = 'opsd' AND s.ssl AND a.query LIKE 'LISTEN%'",
    );
    assert_eq!(listening, "1", "the notification connection is encrypted");
    server.terminate().await;

    let url = format!(
        "postgres://opsd_cert@127.0.0.1:{port}/postgres?sslmode=verify-ca&sslrootcert={}&sslcert={}&sslkey={}",
        ca.display(),
        client_cert.display(),
        client_key.display()
    );
    let server = Process::start_with(&["--store", &url]);
    let client = Client::connect(&server.endpoint).await.unwrap();
    completes_and_wakes(&client).await;
    let by_certificate = cluster.psql(
        "postgres",
        "SELECT count(*) FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) \
         WHERE a.usename = 'opsd_cert' AND s.ssl AND s.client_dn LIKE '%opsd_cert%'",
    );
    assert_ne!(by_certificate, "0", "logged in by client certificate");
    server.terminate().await;
}

/// What TLS must refuse, refused at start with the reason named: a server
/// certificate from another CA, one that does not name the host, a server
/// without TLS when TLS is required (nothing goes out in clear), and a
/// verifying mode without a CA.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_refusals_at_start_name_the_problem() {
    let certs = opsd_testkit::TestCertificates::for_names(&["localhost"]);
    let Some(cluster) = opsd_testkit::tls_cluster(&certs) else {
        return;
    };
    let Some(plain) = opsd_testkit::postgres().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (ca, _, _) = certs.write_to(dir.path());
    let other_dir = tempfile::tempdir().unwrap();
    let (other_ca, _, _) = opsd_testkit::TestCertificates::new().write_to(other_dir.path());
    let port = cluster.port();

    let wrong_ca = format!(
        "postgres://postgres@localhost:{port}/postgres?sslmode=verify-full&sslrootcert={}",
        other_ca.display()
    );
    refused(
        &["--store", &wrong_ca],
        "the server's certificate is not signed by a CA in sslrootcert",
    );
    let verify_ca_wrong_ca = format!(
        "postgres://postgres@127.0.0.1:{port}/postgres?sslmode=verify-ca&sslrootcert={}",
        other_ca.display()
    );
    refused(
        &["--store", &verify_ca_wrong_ca],
        "not signed by a CA in sslrootcert",
    );
    let wrong_host = format!(
        "postgres://postgres@127.0.0.1:{port}/postgres?sslmode=verify-full&sslrootcert={}",
        ca.display()
    );
    refused(
        &["--store", &wrong_host],
        "the server's certificate does not name the host in the url",
    );
    // The same address without the name check is fine: the chain is right.
    let chain_only = format!(
        "postgres://postgres@127.0.0.1:{port}/postgres?sslmode=verify-ca&sslrootcert={}",
        ca.display()
    );
    let server = Process::start_with(&["--store", &chain_only]);
    server.terminate().await;

    // TLS required, the server has none: refused before anything is sent.
    let sep = if plain.url.contains('?') { '&' } else { '?' };
    refused(
        &["--store", &format!("{}{sep}sslmode=require", plain.url)],
        "server does not support TLS",
    );
    refused(
        &["--store", &format!("{}{sep}sslmode=verify-full", plain.url)],
        "sslmode=verify-full needs sslrootcert",
    );
    // The cluster itself takes no clear text (what the encrypted test relies on).
    refused(
        &[
            "--store",
            &format!("postgres://postgres@127.0.0.1:{port}/postgres?sslmode=disable"),
        ],
        "no encryption",
    );
}

/// One producer's record of what it was told.
#[derive(Default)]
struct Ledger {
    /// Every operation as last acknowledged.
    acknowledged: HashMap<String, OpsdOperation>,
    /// Completions whose answer was lost: each may or may not have committed.
    unanswered: HashMap<String, String>,
    refused: usize,
}

/// The primary is killed (kill -9) under 64 producers and its synchronous
/// standby promoted, `OPSD_FAILOVER_ROUNDS` times (5; 20 in the long run),
/// the dead node coming back each round as the new primary's standby. opsd
/// is given both hosts and finds the writable one by itself: nothing
/// acknowledged is lost or altered (every operation is read back from the
/// new primary, with opsd's cache off), writes come back within seconds of
/// the kill, and a watcher started before the failover hears of a
/// completion made after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_failover_loses_nothing_acknowledged() {
    const PRODUCERS: usize = 64;
    let rounds = env_size("OPSD_FAILOVER_ROUNDS", 5);
    let Some(mut pair) = opsd_testkit::replicated_pair() else {
        return;
    };
    let url = pair.url("postgres");
    let server = Process::start_with(&[
        "--store",
        &url,
        "--store-timeout",
        "2s",
        "--cache-size",
        "0",
        "--postgres-max-connections",
        "32",
    ]);
    let client = Client::connect(&server.endpoint).await.unwrap();
    let mut ledger = Ledger::default();
    let mut writes_back = Vec::new();
    let mut watchers_back = Vec::new();

    for round in 0..rounds {
        let watched = loop {
            match client.create(NewOperation::new("watched")).await {
                Ok(op) => break op,
                Err(e) if is_unavailable(&e) => tokio::time::sleep(Duration::from_millis(50)).await,
                Err(e) => panic!("unexpected {e:?}"),
            }
        };
        let mut watch = client.watch(&id_of(&watched)).await.unwrap();
        watch.message().await.unwrap().unwrap();
        let waiter = {
            let (client, id) = (client.clone(), id_of(&watched));
            tokio::spawn(async move { client.wait(&id, Some(Duration::from_secs(120))).await })
        };

        let running = Arc::new(AtomicBool::new(true));
        let producers: Vec<_> = (0..PRODUCERS)
            .map(|p| {
                let (client, running) = (client.clone(), Arc::clone(&running));
                tokio::spawn(async move {
                    let mut ledger = Ledger::default();
                    for n in 0..100_000 {
                        if !running.load(Ordering::SeqCst) {
                            break;
                        }
                        let op = match client.create(NewOperation::new("failover")).await {
                            Ok(op) => op,
                            Err(e) if is_unavailable(&e) => {
                                ledger.refused += 1;
                                tokio::time::sleep(Duration::from_millis(20)).await;
                                continue;
                            }
                            Err(e) => panic!("create: only UNAVAILABLE is acceptable, got {e:?}"),
                        };
                        let id = id_of(&op);
                        ledger.acknowledged.insert(id.clone(), op);
                        let name = format!("r{round}p{p}n{n}");
                        match client.complete(&id, response(&name)).await {
                            Ok(done) => {
                                ledger.acknowledged.insert(id, done);
                            }
                            Err(e) if is_unavailable(&e) => {
                                ledger.refused += 1;
                                ledger.unanswered.insert(id, name);
                                tokio::time::sleep(Duration::from_millis(20)).await;
                            }
                            Err(e) => {
                                panic!("complete: only UNAVAILABLE is acceptable, got {e:?}")
                            }
                        }
                    }
                    ledger
                })
            })
            .collect();

        tokio::time::sleep(Duration::from_secs(1)).await;
        let killed = Instant::now();
        tokio::task::block_in_place(|| pair.fail_over());
        let promoted = killed.elapsed();
        let back = loop {
            match client.create(NewOperation::new("after the failover")).await {
                Ok(op) => {
                    ledger.acknowledged.insert(id_of(&op), op);
                    break killed.elapsed();
                }
                Err(e) if is_unavailable(&e) => {
                    assert!(
                        killed.elapsed() < Duration::from_secs(60),
                        "writes did not come back"
                    );
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("unexpected {e:?}"),
            }
        };
        writes_back.push(back);
        // Completed on the new primary: the watcher and the waiter hear it.
        let done = loop {
            match client
                .complete(&id_of(&watched), response("after the failover"))
                .await
            {
                Ok(done) => break done,
                Err(e) if is_unavailable(&e) => tokio::time::sleep(Duration::from_millis(20)).await,
                Err(e) => panic!("unexpected {e:?}"),
            }
        };
        let heard = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                match watch.message().await.unwrap() {
                    Some(op) if op.operation.as_ref().unwrap().done => return op,
                    Some(_) => {}
                    None => panic!("the watch ended before done"),
                }
            }
        })
        .await
        .expect("the watcher heard of the completion on the new primary");
        watchers_back.push(killed.elapsed());
        assert_eq!(heard, done);
        let waited = tokio::time::timeout(Duration::from_secs(30), waiter)
            .await
            .expect("the waiter returned")
            .unwrap()
            .expect("the wait answered");
        assert_eq!(waited, done, "the waiter woke with the completion");
        ledger.acknowledged.insert(id_of(&done), done);

        tokio::time::sleep(Duration::from_secs(1)).await;
        running.store(false, Ordering::SeqCst);
        for producer in producers {
            let theirs = producer.await.unwrap();
            ledger.refused += theirs.refused;
            ledger.acknowledged.extend(theirs.acknowledged);
            ledger.unanswered.extend(theirs.unanswered);
        }
        eprintln!(
            "failover round {}: promoted {promoted:?} after the kill, writes back after {back:?}",
            round + 1
        );
        // The dead node returns as a standby: the next round can fail over again.
        tokio::task::block_in_place(|| pair.rebuild_standby());
    }

    // Every acknowledged operation, read from the primary now in charge.
    let (mut lost, mut altered, mut landed_unanswered) = (0, 0, 0);
    for (id, acked) in &ledger.acknowledged {
        let stored = match client.get_details(id).await {
            Ok(stored) => stored,
            Err(ClientError::Rpc(s)) if s.code() == Code::NotFound => {
                lost += 1;
                continue;
            }
            Err(e) => panic!("reading {id} back: {e:?}"),
        };
        if stored == *acked {
            continue;
        }
        // A completion whose answer was lost may have committed before the
        // primary died: then it is what is stored, and nothing else is.
        let stored_op = stored.operation.as_ref().unwrap();
        let acked_op = acked.operation.as_ref().unwrap();
        let landed = ledger.unanswered.get(id).is_some_and(|name| {
            let Completion::Response(wanted) = response(name) else {
                unreachable!("a response")
            };
            let mut expected = acked_op.clone();
            expected.done = true;
            expected.modified_at = stored_op.modified_at;
            expected.result = Some(ycop::operation::Result::Response(wanted));
            !acked_op.done && *stored_op == expected
        });
        if landed {
            landed_unanswered += 1;
        } else {
            altered += 1;
            eprintln!("altered: acknowledged {acked:?}, stored {stored:?}");
        }
    }
    let slowest = writes_back.iter().max().copied().unwrap_or_default();
    let mut sorted = writes_back.clone();
    sorted.sort();
    eprintln!(
        "failover: {rounds} rounds, {PRODUCERS} producers, {} acknowledged operations checked on \
         the new primary, {lost} lost, {altered} altered ({landed_unanswered} unanswered \
         completions had landed), {} calls refused with UNAVAILABLE; writes back after the kill: \
         median {:?}, slowest {slowest:?}; watchers told {watchers_back:?} after the kill",
        ledger.acknowledged.len(),
        ledger.refused,
        sorted.get(sorted.len() / 2).copied().unwrap_or_default(),
    );
    assert_eq!(lost, 0, "acknowledged operations lost");
    assert_eq!(altered, 0, "acknowledged operations altered");
    assert!(ledger.refused > 0, "the load saw the failovers");
    assert!(
        slowest < Duration::from_secs(10),
        "writes came back only after {slowest:?}"
    );
    server.terminate().await;
}

/// PgBouncer in transaction mode: with `--postgres-pooler=transaction` and
/// the notification connection straight to the database, producers write
/// through the pooler (no statement survives a transaction there) and
/// watchers are woken; a setup that could not wake them is refused at start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbouncer_in_transaction_mode() {
    const PRODUCERS: usize = 16;
    let Some(cluster) = opsd_testkit::dedicated_cluster() else {
        return;
    };
    let Some(bouncer) = opsd_testkit::pgbouncer(&cluster) else {
        return;
    };
    let pooled = bouncer.url("postgres");
    let direct = cluster.url("postgres");

    refused(
        &["--store", &pooled, "--postgres-pooler", "transaction"],
        "--postgres-pooler=transaction needs --postgres-listen-url",
    );
    // LISTEN through the pooler: the probe notification never arrives.
    refused(
        &[
            "--store",
            &pooled,
            "--postgres-pooler",
            "transaction",
            "--postgres-listen-url",
            &pooled,
            "--store-timeout",
            "2s",
        ],
        "so waiters could not be woken",
    );
    // The pooler not declared: refused too, by the probe or by a statement
    // that lost its preparation, each saying what to do.
    let undeclared = refused(
        &["--store", &pooled, "--store-timeout", "2s"],
        "opsd failed",
    );
    assert!(
        undeclared.contains("waiters could not be woken")
            || undeclared.contains("--postgres-pooler=transaction"),
        "{undeclared}"
    );

    let server = Process::start_with(&[
        "--store",
        &pooled,
        "--postgres-pooler",
        "transaction",
        "--postgres-listen-url",
        &direct,
        "--cache-size",
        "0",
    ]);
    let client = Client::connect(&server.endpoint).await.unwrap();
    // Watched through the pooler, completed at the end.
    let mut watched = Vec::new();
    for _ in 0..4 {
        let op = client.create(NewOperation::new("watched")).await.unwrap();
        let mut watch = client.watch(&id_of(&op)).await.unwrap();
        watch.message().await.unwrap().unwrap();
        watched.push((op, watch));
    }
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            let client = client.clone();
            tokio::spawn(async move {
                let mut acked = Vec::new();
                for n in 0..25 {
                    let keyed = NewOperation {
                        idempotency_key: Some(format!("p{p}n{n}")),
                        ..NewOperation::new("pooled")
                    };
                    let op = client.create(keyed.clone()).await.unwrap();
                    let again = client.create(keyed).await.unwrap();
                    assert_eq!(id_of(&again), id_of(&op), "the idempotency key holds");
                    acked.push(
                        client
                            .complete(&id_of(&op), response(&format!("p{p}n{n}")))
                            .await
                            .unwrap(),
                    );
                }
                acked
            })
        })
        .collect();
    let mut acknowledged = Vec::new();
    for producer in producers {
        acknowledged.extend(producer.await.unwrap());
    }
    for op in &acknowledged {
        assert_eq!(&client.get_details(&id_of(op)).await.unwrap(), op);
        let events = client.list_events(&id_of(op), 0, "").await.unwrap();
        assert_eq!(events.events.len(), 2, "created and completed");
    }
    for (op, mut watch) in watched {
        let done = client
            .complete(&id_of(&op), response("watched"))
            .await
            .unwrap();
        let heard = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match watch.message().await.unwrap() {
                    Some(op) if op.operation.as_ref().unwrap().done => return op,
                    Some(_) => {}
                    None => panic!("the watch ended before done"),
                }
            }
        })
        .await
        .expect("the watcher heard of the completion made through the pooler");
        assert_eq!(heard, done);
    }
    eprintln!(
        "pgbouncer: {} operations created, completed and read back through the pooler",
        acknowledged.len()
    );
    server.terminate().await;
}

/// `opsd migrate`, `opsd migrate --check` and `--no-migrate` on PostgreSQL
/// and SQLite, and a schema newer than the binary refused with both versions named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_check_and_no_migrate() {
    let Some(db) = opsd_testkit::postgres().await else {
        return;
    };
    // The schema this binary knows, as the store reports it.
    let known =
        opsd_store::PostgresStore::schema_version(&opsd_store::PostgresOptions::new(&db.url))
            .await
            .unwrap()
            .binary;
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_str().unwrap().to_owned();
    for store in [
        vec!["--store", db.url.as_str()],
        vec!["--data-dir", &data_dir],
    ] {
        let with = |more: &[&'static str]| {
            let mut args = store.clone();
            args.extend_from_slice(more);
            args
        };
        let check = run_to_exit(&with(&["migrate", "--check"]));
        assert_eq!(check.code, Some(1), "{}", check.output);
        assert!(
            check.output.contains(&format!(
                "database schema version 0 is behind this opsd ({known}): run opsd migrate"
            )),
            "{}",
            check.output
        );
        refused(
            &with(&["--no-migrate"]),
            &format!("behind this opsd ({known})"),
        );
        let migrated = run_to_exit(&with(&["migrate"]));
        assert_eq!(migrated.code, Some(0), "{}", migrated.output);
        assert!(
            migrated
                .output
                .contains(&format!("schema migrated from version 0 to {known}")),
            "{}",
            migrated.output
        );
        let again = run_to_exit(&with(&["migrate"]));
        assert_eq!(again.code, Some(0), "{}", again.output);
        assert!(
            again.output.contains("already up to date"),
            "{}",
            again.output
        );
        let check = run_to_exit(&with(&["migrate", "--check"]));
        assert_eq!(check.code, Some(0), "{}", check.output);
        let server = Process::start_with(&with(&["--no-migrate"]));
        let client = Client::connect(&server.endpoint).await.unwrap();
        client
            .create(NewOperation::new("no-migrate"))
            .await
            .unwrap();
        server.terminate().await;
    }

    // A newer schema than this binary knows: refused everywhere, naming both versions.
    let (admin, connection) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    admin
        .batch_execute(&format!(
            "INSERT INTO opsd_schema_migrations (version) VALUES ({})",
            known + 1
        ))
        .await
        .unwrap();
    let newer = format!(
        "database schema version {} is newer than this opsd knows ({known})",
        known + 1
    );
    refused(&["--store", &db.url], &newer);
    refused(&["--store", &db.url, "--no-migrate"], &newer);
    let check = run_to_exit(&["--store", &db.url, "migrate", "--check"]);
    assert_eq!(check.code, Some(1), "{}", check.output);
    assert!(check.output.contains(&newer), "{}", check.output);
    let migrate = run_to_exit(&["--store", &db.url, "migrate"]);
    assert_eq!(migrate.code, Some(1), "{}", migrate.output);
    assert!(migrate.output.contains(&newer), "{}", migrate.output);
    let memory = run_to_exit(&["--store", "memory", "migrate"]);
    assert_eq!(memory.code, Some(1));
    assert!(memory.output.contains("the memory store has no schema"));
}
