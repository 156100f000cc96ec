//! opsctl run as a binary against a real server, and the official Python
//! SDK's stubs reading operations that opsctl created.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;

use opsd_core::SystemClock;
use opsd_service::{OperationService, ServiceConfig};
use opsd_store::{OperationStore, SqliteOptions, SqliteStore};
use serde_json::Value;
use tokio::sync::oneshot;

struct Server {
    endpoint: String,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    store: Arc<dyn OperationStore>,
    /// Whether this server opened the store (and so closes it), or shares another's.
    owns_store: bool,
    _dir: tempfile::TempDir,
}

impl Server {
    async fn start() -> Self {
        Self::start_with(opsd_server::ServeOptions::default()).await
    }

    /// A server speaking TLS only, with a certificate for localhost and
    /// 127.0.0.1, that admits only `token` (an admin of every scope).
    async fn start_tls(
        certificates: &opsd_testkit::TestCertificates,
        dir: &Path,
        token: &str,
    ) -> Self {
        let tokens = dir.join("tokens.toml");
        std::fs::write(&tokens, admin_entry(token)).unwrap();
        let auth = opsd_server::auth::AuthConfig {
            tokens_file: Some(tokens),
            jwt: None,
            iam: None,
        };
        Self::start_tls_with(certificates, dir, &auth).await
    }

    /// A server speaking TLS only, with a certificate for localhost and
    /// 127.0.0.1, that admits what `auth` configures.
    async fn start_tls_with(
        certificates: &opsd_testkit::TestCertificates,
        dir: &Path,
        auth: &opsd_server::auth::AuthConfig,
    ) -> Self {
        Self::start_with(Self::tls_options(certificates, dir, auth)).await
    }

    fn tls_options(
        certificates: &opsd_testkit::TestCertificates,
        dir: &Path,
        auth: &opsd_server::auth::AuthConfig,
    ) -> opsd_server::ServeOptions {
        let (_, cert, key) = certificates.write_to(dir);
        let certificate = opsd_server::tls::ReloadingCertificate::load(&cert, &key).unwrap();
        let auth = opsd_server::auth::Authenticator::from_config(auth).unwrap();
        opsd_server::ServeOptions {
            tls: Some(certificate.server_config().unwrap()),
            auth: Arc::new(auth),
            ..Default::default()
        }
    }

    async fn start_with(options: opsd_server::ServeOptions) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn OperationStore> =
            Arc::new(SqliteStore::open(SqliteOptions::new(dir.path().join("opsd.db"))).unwrap());
        Self::serve(store, true, dir, options).await
    }

    /// Another replica over this server's store, as replicas share one database.
    async fn replica(&self, options: opsd_server::ServeOptions) -> Self {
        let dir = tempfile::tempdir().unwrap();
        Self::serve(Arc::clone(&self.store), false, dir, options).await
    }

    async fn serve(
        store: Arc<dyn OperationStore>,
        owns_store: bool,
        dir: tempfile::TempDir,
        options: opsd_server::ServeOptions,
    ) -> Self {
        let service = Arc::new(OperationService::new(
            Arc::clone(&store),
            Arc::new(SystemClock),
            ServiceConfig::default(),
        ));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = listener.local_addr().unwrap().to_string();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(opsd_server::serve(listener, service, options, async {
            let _ = stopped.await;
        }));
        Self {
            endpoint,
            stop,
            task,
            store,
            owns_store,
            _dir: dir,
        }
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.unwrap().unwrap();
        if self.owns_store {
            self.store.close().await.unwrap();
        }
    }

    /// Runs opsctl against this server; off the runtime thread, which serves it.
    async fn opsctl(&self, args: &[&str]) -> Output {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_opsctl"));
        command.env("OPSD_ENDPOINT", &self.endpoint).args(args);
        command.output().await.unwrap()
    }

    async fn json(&self, args: &[&str]) -> Value {
        let mut all = vec!["--format", "json"];
        all.extend_from_slice(args);
        let output = self.opsctl(&all).await;
        assert!(
            output.status.success(),
            "opsctl {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).expect("opsctl prints json")
    }
}

/// A tokens-file entry making `token` an admin of every scope.
fn admin_entry(token: &str) -> String {
    format!(
        "[[principal]]\nid = \"sdk-test\"\ntoken_sha256 = \"{}\"\nscopes = [\"*\"]\nroles = [\"admin\"]\n",
        opsd_server::auth::hash_token(token)
    )
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_get_complete_round_trip_as_proto3_json() {
    let server = Server::start().await;
    let created = server
        .json(&[
            "create",
            "--description",
            "snapshot disk-1",
            "--resource-id",
            "disk-1",
            "--metadata-json",
            r#"{"step":"copy","percent":10}"#,
        ])
        .await;
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(id.len(), 20);
    assert_eq!(created["description"], "snapshot disk-1");
    assert_eq!(created["createdBy"], "anonymous");
    assert_eq!(
        created["metadata"]["@type"],
        "type.googleapis.com/google.protobuf.Struct"
    );
    assert_eq!(created["metadata"]["value"]["step"], "copy");
    assert!(
        created.get("done").is_none(),
        "false is omitted by the json mapping"
    );
    assert!(created["createdAt"].as_str().unwrap().ends_with('Z'));

    assert_eq!(server.json(&["get", &id]).await, created);

    let done = server
        .json(&[
            "complete",
            &id,
            "--response-json",
            r#"{"snapshotId":"snap-1"}"#,
        ])
        .await;
    assert_eq!(done["done"], true);
    assert_eq!(done["response"]["value"]["snapshotId"], "snap-1");
    assert!(done.get("error").is_none());
    assert_eq!(server.json(&["get", &id]).await, done);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_and_error_completion() {
    let server = Server::start().await;
    let id = server.json(&["create", "--description", "x"]).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let cancelled = server.json(&["cancel", &id]).await;
    assert_eq!(cancelled["error"]["code"], 1);

    let id = server.json(&["create", "--cooperative-cancel"]).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let requested = server.json(&["cancel", &id]).await;
    assert!(requested.get("done").is_none());
    let failed = server
        .json(&[
            "complete",
            &id,
            "--error-code",
            "1",
            "--error-message",
            "stopped",
        ])
        .await;
    assert_eq!(failed["error"]["code"], 1);
    assert_eq!(failed["error"]["message"], "stopped");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpc_errors_print_the_code_name_and_exit_1() {
    let server = Server::start().await;
    let output = server.opsctl(&["get", "ops00000000000000000"]).await;
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).starts_with("NOT_FOUND: "),
        "{}",
        stderr(&output)
    );

    let id = server.json(&["create", "--not-cancellable"]).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let output = server.opsctl(&["cancel", &id]).await;
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).starts_with("FAILED_PRECONDITION: "));

    let output = server.opsctl(&["get", ""]).await;
    assert!(stderr(&output).starts_with("INVALID_ARGUMENT: operation_id: is required"));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_usage_exits_2_without_calling_the_server() {
    let server = Server::start().await;
    for args in [
        &["create", "--metadata-json", "[1,2]"][..],
        &["create", "--metadata-json", "{not json"],
        &["create", "--not-cancellable", "--cooperative-cancel"],
        &["complete", "ops00000000000000000"],
        &["complete", "ops00000000000000000", "--error-code", "9"],
    ] {
        let output = server.opsctl(args).await;
        assert_eq!(
            output.status.code(),
            Some(2),
            "{args:?}: {}",
            stderr(&output)
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn an_unreachable_server_exits_3() {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_opsctl"))
        .args(["--endpoint", "127.0.0.1:1", "get", "ops00000000000000000"])
        .output()
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(3));
    assert!(stderr(&output).contains("cannot connect to 127.0.0.1:1"));
}

/// opsctl passes `TRACEPARENT` on, and `get` prints the trace the operation
/// was created in (here, with export off, the caller's own).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opsctl_sends_traceparent_and_get_prints_the_trace_id() {
    let server = Server::start().await;
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_opsctl"))
        .env("OPSD_ENDPOINT", &server.endpoint)
        .env("TRACEPARENT", traceparent)
        .args(["--format", "json", "create", "--description", "traced"])
        .output()
        .await
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let created: Value = serde_json::from_slice(&output.stdout).unwrap();
    let id = created["id"].as_str().unwrap();
    let text = String::from_utf8(server.opsctl(&["get", id]).await.stdout).unwrap();
    assert!(
        text.lines()
            .any(|line| line == "trace_id:    4bf92f3577b34da6a3ce929d0e0e4736"),
        "{text}"
    );
    // JSON stays exactly the clouds' Operation.
    let json = server.json(&["get", id]).await;
    assert!(
        json.get("traceId").is_none() && json.get("traceParent").is_none(),
        "{json}"
    );
    // Without TRACEPARENT an operation has no trace, and get prints none.
    let untraced = server.json(&["create", "--description", "untraced"]).await;
    let text = String::from_utf8(
        server
            .opsctl(&["get", untraced["id"].as_str().unwrap()])
            .await
            .stdout,
    )
    .unwrap();
    assert!(!text.contains("trace_id:"), "{text}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_output_lists_the_fields() {
    let server = Server::start().await;
    let output = server
        .opsctl(&["create", "--description", "resize disk"])
        .await;
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(text.contains("description: resize disk"), "{text}");
    assert!(text.contains("done:        false"), "{text}");
    let id = text
        .lines()
        .next()
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_owned();
    let output = server
        .opsctl(&[
            "complete",
            &id,
            "--error-code",
            "9",
            "--error-message",
            "quota exceeded",
        ])
        .await;
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(
        text.contains("error:       FAILED_PRECONDITION (9): quota exceeded"),
        "{text}"
    );
    server.stop().await;
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The python of the venv with the pinned official SDK (created on first use).
async fn sdk_python() -> String {
    let venv = tokio::process::Command::new("bash")
        .arg(repo_root().join("scripts/sdk-venv"))
        .output()
        .await
        .expect("bash runs scripts/sdk-venv");
    assert!(
        venv.status.success(),
        "cannot prepare the python sdk environment: {}",
        stderr(&venv)
    );
    String::from_utf8(venv.stdout)
        .unwrap()
        .lines()
        .last()
        .expect("sdk-venv prints the python path")
        .trim()
        .to_owned()
}

/// Runs one pytest file of tests/sdk with `env`; fails on any failure or skip.
async fn pytest(file: &str, env: &[(&str, &str)]) {
    let python = sdk_python().await;
    let mut command = tokio::process::Command::new(&python);
    command
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
        .arg(repo_root().join("tests/sdk").join(file))
        .env("OPSCTL", env!("CARGO_BIN_EXE_opsctl"));
    for (name, value) in env {
        command.env(name, value);
    }
    let output = command.output().await.unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        stderr(&output)
    );
    assert!(
        output.status.success(),
        "python sdk tests failed:\n{report}"
    );
    assert!(report.contains(" passed"), "pytest ran no test:\n{report}");
    assert!(
        !report.contains("skipped"),
        "a python sdk test was skipped:\n{report}"
    );
}

/// The unmodified official SDK object over TLS: endpoint discovery, the
/// operation waiter, its error for a failed operation, Cancel and NOT_FOUND.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_python_sdk_waits_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let certificates = opsd_testkit::TestCertificates::new();
    let (token, _) = opsd_server::auth::new_token();
    let server = Server::start_tls(&certificates, dir.path(), &token).await;
    let ca = dir.path().join("ca.pem");
    pytest(
        "test_official_sdk_tls.py",
        &[
            ("OPSD_TLS_ENDPOINT", &server.endpoint),
            ("OPSD_TLS_CA", ca.to_str().unwrap()),
            ("OPSD_TOKEN", &token),
        ],
    )
    .await;
    server.stop().await;
}

/// The unmodified official SDK with its own credentials over TLS: a
/// service-account key it made (`service_account_key=`) and a tokens-file
/// token (`token=`), exchanged at the `iam` endpoint discovery announces;
/// refusals of a wrong key, an expired JWT and a wrong audience; and two
/// replicas with one IAM signing key accepting each other's tokens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_python_sdk_exchanges_its_own_credentials_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let certificates = opsd_testkit::TestCertificates::new();
    let python = sdk_python().await;
    let key_file = dir.path().join("sa-key.json");
    let made = tokio::process::Command::new(&python)
        .arg(repo_root().join("tests/sdk/sa_key.py"))
        .arg(&key_file)
        .args(["ajekeysdktest000001", "ajesdkaccount000001"])
        .output()
        .await
        .unwrap();
    assert!(made.status.success(), "sa_key.py failed: {}", stderr(&made));
    let key: Value = serde_json::from_slice(&std::fs::read(&key_file).unwrap()).unwrap();

    let (admin, _) = opsd_server::auth::new_token();
    let (oauth, oauth_hash) = opsd_server::auth::new_token();
    let tokens = dir.path().join("tokens.toml");
    std::fs::write(
        &tokens,
        format!(
            "{}\n[[principal]]\nid = \"sdk-oauth\"\ntoken_sha256 = \"{oauth_hash}\"\n\
             scopes = [\"*\"]\nroles = [\"viewer\"]\n\n\
             [[service_account_key]]\nid = \"{}\"\nprincipal = \"{}\"\n\
             public_key = \"\"\"{}\"\"\"\nscopes = [\"*\"]\nroles = [\"viewer\"]\n",
            admin_entry(&admin),
            key["id"].as_str().unwrap(),
            key["service_account_id"].as_str().unwrap(),
            key["public_key"].as_str().unwrap(),
        ),
    )
    .unwrap();
    let signing_key = dir.path().join("iam.pem");
    std::fs::write(
        &signing_key,
        rcgen::KeyPair::generate().unwrap().serialize_pem(),
    )
    .unwrap();
    let auth = opsd_server::auth::AuthConfig {
        tokens_file: Some(tokens),
        jwt: None,
        iam: Some(opsd_server::auth::IamConfig::new(signing_key)),
    };
    let a = Server::start_tls_with(&certificates, dir.path(), &auth).await;
    let b = a
        .replica(Server::tls_options(&certificates, dir.path(), &auth))
        .await;
    let ca = dir.path().join("ca.pem");
    pytest(
        "test_official_sdk_credentials.py",
        &[
            ("OPSD_TLS_ENDPOINT", &a.endpoint),
            ("OPSD_TLS_ENDPOINT_B", &b.endpoint),
            ("OPSD_TLS_CA", ca.to_str().unwrap()),
            ("OPSD_TOKEN", &admin),
            ("OPSD_OAUTH_TOKEN", &oauth),
            ("OPSD_SA_KEY_FILE", key_file.to_str().unwrap()),
        ],
    )
    .await;
    b.stop().await;
    a.stop().await;
}

/// opsctl over TLS: verified against the given CA, refused without it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opsctl_verifies_the_server_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let certificates = opsd_testkit::TestCertificates::new();
    let (token, _) = opsd_server::auth::new_token();
    let server = Server::start_tls(&certificates, dir.path(), &token).await;
    let https = format!("https://{}", server.endpoint);
    let ca = dir.path().join("ca.pem");
    let trusted = tokio::process::Command::new(env!("CARGO_BIN_EXE_opsctl"))
        .args(["--endpoint", &https, "--ca", ca.to_str().unwrap(), "create"])
        .env("OPSD_TOKEN", &token)
        .output()
        .await
        .unwrap();
    assert!(trusted.status.success(), "{}", stderr(&trusted));

    let untrusted = tokio::process::Command::new(env!("CARGO_BIN_EXE_opsctl"))
        .args(["--endpoint", &https, "create"])
        .output()
        .await
        .unwrap();
    assert_eq!(untrusted.status.code(), Some(3), "{}", stderr(&untrusted));

    let plaintext = tokio::process::Command::new(env!("CARGO_BIN_EXE_opsctl"))
        .args(["--endpoint", &server.endpoint, "create"])
        .output()
        .await
        .unwrap();
    assert!(
        !plaintext.status.success(),
        "a tls server refuses plaintext"
    );
    server.stop().await;
}

/// The official Yandex Cloud Python SDK's stubs, pinned in tests/sdk, Get and
/// Cancel operations that opsctl created: a client no one here wrote.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_python_sdk_reads_and_cancels_what_opsctl_created() {
    let server = Server::start().await;
    pytest(
        "test_official_sdk.py",
        &[("OPSD_ENDPOINT", &server.endpoint)],
    )
    .await;
    server.stop().await;
}

/// opsctl sends --token (or OPSD_TOKEN); without it a server with credentials refuses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opsctl_authenticates_with_its_token() {
    let dir = tempfile::tempdir().unwrap();
    let certificates = opsd_testkit::TestCertificates::new();
    let (token, _) = opsd_server::auth::new_token();
    let server = Server::start_tls(&certificates, dir.path(), &token).await;
    let https = format!("https://{}", server.endpoint);
    let ca = dir.path().join("ca.pem");
    let run = |extra: &[&str]| {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_opsctl"));
        command
            .args([
                "--endpoint",
                &https,
                "--ca",
                ca.to_str().unwrap(),
                "--format",
                "json",
            ])
            .args(extra)
            .env_remove("OPSD_TOKEN");
        command.output()
    };
    let anonymous = run(&["create"]).await.unwrap();
    assert_eq!(anonymous.status.code(), Some(1));
    assert!(
        stderr(&anonymous).starts_with("UNAUTHENTICATED: "),
        "{}",
        stderr(&anonymous)
    );
    let created = run(&["--token", &token, "create"]).await.unwrap();
    assert!(created.status.success(), "{}", stderr(&created));
    let op: Value = serde_json::from_slice(&created.stdout).unwrap();
    assert_eq!(op["createdBy"], "sdk-test");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_exits_by_how_the_operation_ended() {
    let server = Server::start().await;
    let id_of = |v: Value| v["id"].as_str().unwrap().to_owned();

    // Done with a response: 0, and the JSON equals what Get says.
    let ok = id_of(server.json(&["create"]).await);
    server
        .json(&["complete", &ok, "--response-json", r#"{"a":1}"#])
        .await;
    let output = server.opsctl(&["--format", "json", "wait", &ok]).await;
    assert_eq!(output.status.code(), Some(0));
    let waited: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(waited, server.json(&["get", &ok]).await);

    // Failed: 4. Cancelled: 5.
    let failed = id_of(server.json(&["create"]).await);
    server
        .json(&[
            "complete",
            &failed,
            "--error-code",
            "9",
            "--error-message",
            "quota",
        ])
        .await;
    assert_eq!(
        server.opsctl(&["wait", &failed]).await.status.code(),
        Some(4)
    );
    let cancelled = id_of(server.json(&["create"]).await);
    server.json(&["cancel", &cancelled]).await;
    assert_eq!(
        server.opsctl(&["wait", &cancelled]).await.status.code(),
        Some(5)
    );

    // Still running when the timeout passes: 6, printing the latest state.
    let running = id_of(server.json(&["create"]).await);
    let output = server
        .opsctl(&["--format", "json", "wait", &running, "--timeout", "300ms"])
        .await;
    assert_eq!(output.status.code(), Some(6));
    let latest: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(latest["id"], running.as_str());

    // A producer completing while opsctl waits.
    let later = id_of(server.json(&["create"]).await);
    let wait_args = ["wait", later.as_str()];
    let waiter = server.opsctl(&wait_args);
    let completer = async {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        server
            .json(&["complete", &later, "--response-json", "{}"])
            .await
    };
    let (waited, _) = tokio::join!(waiter, completer);
    assert_eq!(waited.status.code(), Some(0), "{}", stderr(&waited));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_prints_an_aligned_table_and_json_like_grpc() {
    let server = Server::start().await;
    for description in ["first", "second with a longer description"] {
        server.json(&["create", "--description", description]).await;
    }
    let output = server.opsctl(&["list"]).await;
    let table = String::from_utf8(output.stdout).unwrap();
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    assert!(lines[0].starts_with("ID"));
    assert!(
        lines[1].ends_with("second with a longer description"),
        "newest first: {table}"
    );
    // Columns line up: every row has STATE where the header has it.
    let state_column = lines[0].find("STATE").unwrap();
    for row in &lines[1..] {
        assert_eq!(&row[state_column..state_column + 7], "RUNNING", "{table}");
    }

    let listed = server.json(&["list", "--page-size", "1"]).await;
    assert_eq!(listed["operations"].as_array().unwrap().len(), 1);
    let token = listed["nextPageToken"].as_str().unwrap();
    let next = server
        .json(&["list", "--page-size", "1", "--page-token", token])
        .await;
    assert_eq!(next["operations"][0]["operation"]["description"], "first");

    // Searches reach the server: the match is found whatever its case.
    let found = server
        .json(&["list", "--description-contains", "SECOND WITH"])
        .await;
    let found = found["operations"].as_array().unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(
        found[0]["operation"]["description"],
        "second with a longer description"
    );
    let id = found[0]["operation"]["id"].as_str().unwrap().to_owned();
    let by_prefix = server.json(&["list", "--id-prefix", &id[..15]]).await;
    assert_eq!(by_prefix["operations"][0]["operation"]["id"], id.as_str());
    assert_eq!(by_prefix["operations"].as_array().unwrap().len(), 1);
    let none = server
        .json(&[
            "list",
            "--id-prefix",
            "ops",
            "--description-contains",
            "third",
        ])
        .await;
    assert!(
        none.get("operations")
            .is_none_or(|ops| ops.as_array().unwrap().is_empty()),
        "{none}"
    );
    let refused = server.opsctl(&["list", "--id-prefix", "OPS"]).await;
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("id_prefix"),
        "{}",
        stderr(&refused)
    );

    let yaml = server.opsctl(&["--format", "yaml", "list"]).await;
    let yaml = String::from_utf8(yaml.stdout).unwrap();
    assert!(
        yaml.starts_with("operations:\n- operation:\n    id: \"ops"),
        "{yaml}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_and_progress_follow_an_operation_to_its_end() {
    let server = Server::start().await;
    let id = server.json(&["create", "--description", "copy"]).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let progressed = server
        .json(&[
            "progress",
            &id,
            "--done",
            "3",
            "--total",
            "10",
            "--message",
            "copying",
        ])
        .await;
    assert_eq!(progressed["id"], id.as_str());
    let watch_args = ["--format", "json", "watch", id.as_str()];
    let watcher = server.opsctl(&watch_args);
    let completer = async {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        server
            .json(&["complete", &id, "--response-json", "{}"])
            .await
    };
    let (watched, _) = tokio::join!(watcher, completer);
    assert!(watched.status.success(), "{}", stderr(&watched));
    let updates: Vec<Value> = String::from_utf8(watched.stdout)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(updates.first().unwrap()["progress"]["workDone"], "3");
    assert_eq!(updates.last().unwrap()["operation"]["done"], true);

    let completions = server.opsctl(&["completions", "bash"]).await;
    assert!(
        String::from_utf8(completions.stdout)
            .unwrap()
            .contains("opsctl")
    );
    server.stop().await;
}

/// A profile of the config file supplies the endpoint; flags still win.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn profiles_in_the_config_file_supply_the_connection() {
    let server = Server::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "default_profile = \"broken\"\n[profiles.broken]\nendpoint = \"127.0.0.1:1\"\n\
             [profiles.test]\nendpoint = \"{}\"\n",
            server.endpoint
        ),
    )
    .unwrap();
    let run = |args: &[&str]| {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_opsctl"));
        command
            .env_remove("OPSD_ENDPOINT")
            .env("OPSD_CONFIG", &config)
            .args(args);
        command.output()
    };
    let by_profile = run(&["--profile", "test", "create"]).await.unwrap();
    assert!(by_profile.status.success(), "{}", stderr(&by_profile));
    let default_profile = run(&["create"]).await.unwrap();
    assert_eq!(
        default_profile.status.code(),
        Some(3),
        "the default profile is used"
    );
    let flag_wins = run(&["--endpoint", &server.endpoint, "create"])
        .await
        .unwrap();
    assert!(flag_wins.status.success(), "{}", stderr(&flag_wins));
    let unknown = run(&["--profile", "nope", "create"]).await.unwrap();
    assert_eq!(unknown.status.code(), Some(2));
    server.stop().await;
}

/// `report-failure` keeps the operation running with its error shown; `wait`
/// goes on until done unless told to stop at the failure (exit 7); `watch`,
/// `get` and `list` say it is failing; `complete --as-reported` ends it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reported_failure_is_shown_and_waited_past() {
    let server = Server::start().await;
    let id = server
        .json(&["create", "--description", "create disk"])
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let reported = server
        .json(&[
            "report-failure",
            &id,
            "--error-code",
            "8",
            "--error-message",
            "quota exceeded",
        ])
        .await;
    assert_eq!(reported["done"], Value::Null, "not done: {reported}");
    assert_eq!(reported["error"]["code"], 8);

    let text = server.opsctl(&["get", &id]).await;
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(text.contains("done:        false"), "{text}");
    assert!(
        text.contains(
            "error:       RESOURCE_EXHAUSTED (8): quota exceeded (reported while running"
        ),
        "{text}"
    );
    let list = String::from_utf8(server.opsctl(&["list"]).await.stdout).unwrap();
    assert!(list.contains("FAILING:RESOURCE_EXHAUSTED"), "{list}");

    // Stopping at the failure: 7, with the operation still running.
    let output = server
        .opsctl(&["--format", "json", "wait", &id, "--stop-at-failure"])
        .await;
    assert_eq!(output.status.code(), Some(7), "{}", stderr(&output));
    let latest: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(latest["error"]["message"], "quota exceeded");
    // By default, wait does not stop there.
    let output = server.opsctl(&["wait", &id, "--timeout", "300ms"]).await;
    assert_eq!(output.status.code(), Some(6), "{}", stderr(&output));

    // watch and wait see the cleanup end; a response is refused on the way.
    let refused = server
        .opsctl(&["complete", &id, "--response-json", "{}"])
        .await;
    assert_eq!(refused.status.code(), Some(1));
    assert!(stderr(&refused).starts_with("FAILED_PRECONDITION: a failure was reported"));
    let (watch_args, wait_args) = (["watch", id.as_str()], ["wait", id.as_str()]);
    let watcher = server.opsctl(&watch_args);
    let waiter = server.opsctl(&wait_args);
    let completer = async {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        server.json(&["complete", &id, "--as-reported"]).await
    };
    let (watched, waited, done) = tokio::join!(watcher, waiter, completer);
    assert_eq!(done["done"], true);
    assert_eq!(done["error"]["message"], "quota exceeded");
    assert_eq!(waited.status.code(), Some(4), "failed: {}", stderr(&waited));
    let lines = String::from_utf8(watched.stdout).unwrap();
    let lines: Vec<&str> = lines.lines().collect();
    assert!(
        lines[0].ends_with("RUNNING FAILING RESOURCE_EXHAUSTED: quota exceeded"),
        "{lines:?}"
    );
    assert!(
        lines
            .last()
            .unwrap()
            .ends_with("DONE RESOURCE_EXHAUSTED: quota exceeded"),
        "{lines:?}"
    );

    let usage = server
        .opsctl(&["report-failure", &id, "--error-code", "8"])
        .await;
    assert_eq!(usage.status.code(), Some(2), "the message is required");
    server.stop().await;
}

/// `events` prints the whole timeline, page after page: a table with the
/// details a person needs, and the pages merged into one ListEvents response
/// in JSON and YAML.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_prints_the_timeline_as_a_table_and_as_one_response() {
    let server = Server::start().await;
    let id = server
        .json(&[
            "create",
            "--description",
            "resize disk-3",
            "--resource-id",
            "disk-3",
        ])
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    server
        .json(&[
            "progress",
            &id,
            "--done",
            "3",
            "--total",
            "10",
            "--message",
            "copying",
        ])
        .await;
    server
        .json(&[
            "report-failure",
            &id,
            "--error-code",
            "8",
            "--error-message",
            "quota",
        ])
        .await;
    server.json(&["complete", &id, "--as-reported"]).await;

    let output = server.opsctl(&["events", &id]).await;
    assert!(output.status.success(), "{}", stderr(&output));
    let table = String::from_utf8(output.stdout).unwrap();
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 5, "a header and four events: {table}");
    let header: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(
        header,
        ["SEQ", "TIME", "KIND", "ACTOR", "VERSION", "DETAILS"],
        "{table}"
    );
    let rows: Vec<Vec<&str>> = lines[1..]
        .iter()
        .map(|line| line.split_whitespace().collect())
        .collect();
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(row[0], (i + 1).to_string(), "sequence: {table}");
        assert!(row[1].starts_with("20") && row[1].ends_with('Z'), "{table}");
        assert_eq!(row[3], "anonymous", "{table}");
        assert_eq!(row[4], (i + 1).to_string(), "version: {table}");
    }
    let kinds: Vec<&str> = rows.iter().map(|row| row[2]).collect();
    assert_eq!(
        kinds,
        [
            "created",
            "metadata_updated",
            "failure_reported",
            "completed"
        ]
    );
    assert!(lines[1].ends_with("\"resize disk-3\""), "{table}");
    assert!(lines[2].ends_with("3/10 copying"), "{table}");
    assert!(lines[3].ends_with("RESOURCE_EXHAUSTED: quota"), "{table}");
    assert!(lines[4].ends_with("RESOURCE_EXHAUSTED: quota"), "{table}");
    // Columns line up: each starts where its header does.
    let details = lines[0].find("DETAILS").unwrap();
    let kind = lines[0].find("KIND").unwrap();
    for line in &lines[1..] {
        for column in [kind, details] {
            assert_eq!(&line[column - 2..column], "  ", "{table}");
            assert_ne!(&line[column..=column], " ", "{table}");
        }
    }

    // One page per event: every page read, merged into one response.
    let paged = server.json(&["events", &id, "--page-size", "1"]).await;
    let events = paged["events"].as_array().expect("an events array");
    assert_eq!(events.len(), 4, "{paged}");
    assert!(paged.get("nextPageToken").is_none(), "{paged}");
    assert_eq!(paged, server.json(&["events", &id]).await);
    let kinds: Vec<&str> = events.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "EVENT_KIND_CREATED",
            "EVENT_KIND_METADATA_UPDATED",
            "EVENT_KIND_FAILURE_REPORTED",
            "EVENT_KIND_COMPLETED"
        ]
    );
    assert_eq!(events[0]["operationId"], id.as_str());
    assert_eq!(events[0]["sequence"], "1", "int64 as a string");
    assert_eq!(events[0]["resourceId"], "disk-3");
    assert_eq!(events[0]["description"], "resize disk-3");
    assert_eq!(events[1]["progress"]["workDone"], "3");
    assert_eq!(events[1]["progress"]["message"], "copying");
    assert_eq!(events[2]["error"]["code"], 8);
    assert_eq!(events[3]["error"]["message"], "quota");
    assert_eq!(events[3]["version"], "4");

    let yaml = server.opsctl(&["--format", "yaml", "events", &id]).await;
    let yaml = String::from_utf8(yaml.stdout).unwrap();
    assert!(
        yaml.starts_with(&format!(
            "events:\n- operationId: \"{id}\"\n  sequence: \"1\""
        )),
        "{yaml}"
    );

    let missing = server.opsctl(&["events", "ops00000000000000000"]).await;
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        stderr(&missing).starts_with("NOT_FOUND: "),
        "{}",
        stderr(&missing)
    );
    server.stop().await;
}

/// A running `opsctl watch --all`, its stdout read line by line.
struct Follower {
    child: tokio::process::Child,
    lines: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
}

impl Follower {
    fn start(server: &Server, args: &[&str]) -> Self {
        use tokio::io::AsyncBufReadExt;
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_opsctl"))
            .env("OPSD_ENDPOINT", &server.endpoint)
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        Self {
            child,
            lines: tokio::io::BufReader::new(stdout).lines(),
        }
    }

    /// The next `n` lines, each within 10 seconds.
    async fn lines(&mut self, n: usize) -> Vec<String> {
        let mut lines = Vec::new();
        for _ in 0..n {
            let line =
                tokio::time::timeout(std::time::Duration::from_secs(10), self.lines.next_line())
                    .await
                    .unwrap_or_else(|_| panic!("no line within 10s after {lines:?}"))
                    .unwrap()
                    .unwrap_or_else(|| panic!("opsctl ended after {lines:?}"));
            lines.push(line);
        }
        lines
    }

    async fn json_lines(&mut self, n: usize) -> Vec<Value> {
        self.lines(n)
            .await
            .iter()
            .map(|line| serde_json::from_str(line).expect("a json line"))
            .collect()
    }

    /// Ctrl-C: returns the exit code and stderr.
    async fn interrupt(mut self) -> (Option<i32>, String) {
        use tokio::io::AsyncReadExt;
        let pid = self.child.id().unwrap().to_string();
        let sent = tokio::process::Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .await
            .unwrap();
        assert!(sent.success());
        let status = tokio::time::timeout(std::time::Duration::from_secs(10), self.child.wait())
            .await
            .expect("opsctl ends at ctrl-c")
            .unwrap();
        let mut errors = String::new();
        let mut stderr = self.child.stderr.take().unwrap();
        stderr.read_to_string(&mut errors).await.unwrap();
        (status.code(), errors)
    }
}

/// `watch --all` follows the change feed from a resume token: the events of
/// operations on one resource only (or of some kinds only), as JSON lines
/// with their tokens or as text; at Ctrl-C it says how to resume.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_all_follows_the_events_of_one_resource() {
    use opsd_client::{Client, Completion, FeedFilter, NewOperation};
    let server = Server::start().await;
    let client = Client::connect(&server.endpoint).await.unwrap();
    let on = |resource: &str| NewOperation {
        resource_id: Some(resource.to_owned()),
        ..NewOperation::new(format!("work on {resource}"))
    };
    let id_of = |op: opsd_client::OpsdOperation| op.operation.unwrap().id;

    // A token to start from: the feed's position after the first operation.
    let mut feed = client
        .watch_operations(FeedFilter::default(), None)
        .await
        .unwrap();
    let before = id_of(client.create(on("disk-r")).await.unwrap());
    let start = feed.next().await.unwrap().unwrap();
    assert_eq!(start.event.operation_id, before);
    drop(feed);

    // Already committed when opsctl starts: read back from the token.
    let on_r = id_of(client.create(on("disk-r")).await.unwrap());
    let elsewhere = id_of(client.create(on("disk-other")).await.unwrap());
    let progress = opsd_client::Progress {
        work_done: 3,
        work_total: 10,
        message: "copying".into(),
        steps: Vec::new(),
    };
    client.update(&on_r, None, Some(progress)).await.unwrap();
    client
        .complete(
            &elsewhere,
            Completion::Response(opsd_client::pack_struct(&Default::default())),
        )
        .await
        .unwrap();

    let mut follower = Follower::start(
        &server,
        &[
            "--format",
            "json",
            "watch",
            "--all",
            "--resource-id",
            "disk-r",
            "--resume-token",
            &start.resume_token,
        ],
    );
    let backlog = follower.json_lines(2).await;
    // Committed while it follows.
    let later = id_of(client.create(on("disk-r")).await.unwrap());
    client.create(on("disk-other")).await.unwrap();
    client
        .complete(
            &later,
            Completion::Error(opsd_proto::RpcStatus {
                code: 8,
                message: "quota".into(),
                details: Vec::new(),
            }),
        )
        .await
        .unwrap();
    let live = follower.json_lines(2).await;
    let (code, errors) = follower.interrupt().await;

    let seen: Vec<(&str, &str)> = backlog
        .iter()
        .chain(&live)
        .map(|line| {
            assert_eq!(line["event"]["resourceId"], "disk-r", "{line}");
            assert!(!line["resumeToken"].as_str().unwrap().is_empty(), "{line}");
            (
                line["event"]["operationId"].as_str().unwrap(),
                line["event"]["kind"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            (on_r.as_str(), "EVENT_KIND_CREATED"),
            (on_r.as_str(), "EVENT_KIND_METADATA_UPDATED"),
            (later.as_str(), "EVENT_KIND_CREATED"),
            (later.as_str(), "EVENT_KIND_COMPLETED"),
        ]
    );
    assert_eq!(code, Some(130), "{errors}");
    let last_token = live[1]["resumeToken"].as_str().unwrap();
    assert!(
        errors.contains(&format!("resume with: --resume-token {last_token}")),
        "{errors}"
    );

    // Text: a line per event, time, id, kind, details; --kind narrows it.
    let mut text = Follower::start(
        &server,
        &[
            "watch",
            "--all",
            "--resource-id",
            "disk-r",
            "--resume-token",
            &start.resume_token,
        ],
    );
    let lines = text.lines(4).await;
    drop(text);
    let words: Vec<Vec<&str>> = lines
        .iter()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert!(words.iter().all(|w| w[0].ends_with('Z')), "{lines:#?}");
    assert_eq!(words[0][1..3], [on_r.as_str(), "created"], "{lines:#?}");
    assert_eq!(words[0][3..], ["\"work", "on", "disk-r\""], "{lines:#?}");
    assert_eq!(
        words[1][2..],
        ["metadata_updated", "3/10", "copying"],
        "{lines:#?}"
    );
    assert_eq!(
        words[3][1..],
        [later.as_str(), "completed", "RESOURCE_EXHAUSTED:", "quota"],
        "{lines:#?}"
    );
    let mut completions = Follower::start(
        &server,
        &[
            "watch",
            "--all",
            "--kind",
            "completed",
            "--resume-token",
            &start.resume_token,
        ],
    );
    let lines = completions.lines(2).await;
    drop(completions);
    assert!(
        lines[0].contains(&format!("{elsewhere}  completed ")),
        "{lines:#?}"
    );
    assert!(
        lines[1].contains(&format!("{later}  completed ")),
        "{lines:#?}"
    );

    // A token that is none: the server's refusal, at once.
    let bad = server
        .opsctl(&["watch", "--all", "--resume-token", "bogus"])
        .await;
    assert_eq!(bad.status.code(), Some(1), "{}", stderr(&bad));
    assert!(
        stderr(&bad).starts_with("INVALID_ARGUMENT: resume_token"),
        "{}",
        stderr(&bad)
    );
    server.stop().await;
}

/// `watch` takes an operation id or --all, never both; the feed's filters go
/// with --all only; `events` needs an id and a page size the server accepts.
#[tokio::test]
async fn watch_and_events_usage_errors_exit_2() {
    let opsctl = |args: &[&str]| {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_opsctl"));
        // Nothing listens there: a usage error must not need a server.
        command.args(["--endpoint", "127.0.0.1:1"]).args(args);
        command.output()
    };
    let id = "ops00000000000000000";
    for (args, says) in [
        (&["watch", id, "--all"][..], "cannot be used with"),
        (&["watch", "--all", id], "cannot be used with"),
        (&["watch"], "required"),
        (
            &["watch", id, "--resource-id", "disk-1"],
            "cannot be used with",
        ),
        (&["watch", id, "--resume-token", "x"], "cannot be used with"),
        (&["watch", "--resource-id", "disk-1"], "<ID|--all>"),
        (&["watch", "--all", "--kind", "finished"], "invalid value"),
        (&["events"], "required"),
        (&["events", id, "--page-size", "0"], "invalid value"),
    ] {
        let output = opsctl(args).await.unwrap();
        assert_eq!(
            output.status.code(),
            Some(2),
            "{args:?}: {}",
            stderr(&output)
        );
        assert!(
            stderr(&output).contains(says),
            "{args:?}: {}",
            stderr(&output)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overview_prints_stuck_oldest_and_producers_and_json_like_grpc() {
    let server = Server::start().await;
    let created = server
        .json(&[
            "create",
            "--description",
            "quiet snapshot",
            "--id-prefix",
            "snp",
        ])
        .await;
    let quiet = created["id"].as_str().unwrap().to_owned();
    for code in ["9", "1"] {
        let done = server
            .json(&["create", "--description", "failing", "--id-prefix", "snp"])
            .await;
        let id = done["id"].as_str().unwrap();
        server
            .json(&[
                "complete",
                "--error-code",
                code,
                "--error-message",
                "stop",
                id,
            ])
            .await;
    }

    // A threshold of 1ms: the quiet one is stuck by the time the call arrives.
    let output = server.opsctl(&["overview", "--stuck-after", "1ms"]).await;
    assert!(output.status.success(), "{}", stderr(&output));
    let text = String::from_utf8(output.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0], "running 1  stuck 1  done 2  failed 1  (last 1h; stuck after 1ms)",
        "{text}"
    );
    let stuck = lines.iter().position(|l| *l == "STUCK").unwrap();
    assert!(lines[stuck + 1].starts_with("ID"), "{text}");
    assert!(lines[stuck + 2].starts_with(&quiet), "{text}");
    assert!(
        lines[stuck + 2].contains("no change for over 1ms"),
        "{text}"
    );
    let producers = lines
        .iter()
        .position(|l| *l == "PRODUCERS (last 1h)")
        .unwrap();
    let header = lines[producers + 1];
    let row = lines[producers + 2];
    assert!(row.starts_with("snp"), "{text}");
    // Right-aligned under their headers: 2 done, 1 failed (50%), 1 cancelled.
    let under = |name: &str| {
        let end = header.find(name).unwrap() + name.len();
        row[..end].split_whitespace().last().unwrap().to_owned()
    };
    assert_eq!(under("DONE"), "2", "{text}");
    assert_eq!(under("CANCELLED"), "1", "{text}");
    assert!(row.contains("1 (50%)"), "{text}");

    let json = server
        .json(&["overview", "--window", "10m", "--oldest", "1"])
        .await;
    assert_eq!(json["window"], "600s");
    assert_eq!(json["stuckAfter"], "600s", "the server's threshold");
    assert_eq!(json["running"], "1");
    assert_eq!(json["oldestRunning"][0]["operation"]["id"], quiet.as_str());
    assert_eq!(json["producers"][0]["idPrefix"], "snp");
    assert_eq!(json["producers"][0]["failed"], "1");
    assert_eq!(json["producers"][0]["cancelled"], "1");

    let refused = server.opsctl(&["overview", "--window", "8d"]).await;
    assert_eq!(refused.status.code(), Some(2), "{}", stderr(&refused));
    let refused = server.opsctl(&["overview", "--window", "200h"]).await;
    assert_eq!(refused.status.code(), Some(1));
    assert_eq!(
        stderr(&refused).trim(),
        "INVALID_ARGUMENT: window: must be more than 0s and at most 7 days"
    );
    server.stop().await;
}

/// `opsctl list | head` closes the pipe before opsctl is done writing: the
/// command ends quietly with 0, as `cat` and `ls` do, instead of panicking.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_stdout_ends_every_command_quietly() {
    let server = Server::start().await;
    let created = server.json(&["create", "--description", "piped"]).await;
    let id = created["id"].as_str().unwrap().to_owned();
    server
        .json(&["complete", &id, "--response-json", "{}"])
        .await;
    for args in [
        &["get", &id][..],
        &["--format", "json", "get", &id],
        &["list"],
        &["--format", "json", "list"],
        &["events", &id],
        &["overview"],
        &["watch", &id],
        &["wait", &id],
        &["completions", "bash"],
    ] {
        // The reading end is closed before opsctl starts, so its first
        // write already meets a broken pipe.
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        // Spawned, not `output()`, which would replace stdout with its own pipe.
        let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_opsctl"))
            .env("OPSD_ENDPOINT", &server.endpoint)
            .args(args)
            .stdout(std::process::Stdio::from(writer))
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
            .wait_with_output()
            .await
            .unwrap();
        assert_eq!(
            output.status.code(),
            Some(0),
            "{args:?}: {}",
            stderr(&output)
        );
        assert_eq!(stderr(&output), "", "{args:?}");
    }
    server.stop().await;
}
