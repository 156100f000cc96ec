//! `opsctl --descriptor-set`: a producer's message types (the example
//! snapshot service's `snapshot.binpb`) make `--format json` print its
//! payloads field by field; without them they print as base64.

use std::path::Path;
use std::sync::Arc;

use opsd_client::{Client, Completion, NewOperation};

/// `opsd.example.v1.Snapshot{snapshot_id: "snap-1", disk_id: "disk-1", size_bytes: 1024}`.
fn snapshot() -> prost_types::Any {
    let mut value = vec![0x0a, 6];
    value.extend_from_slice(b"snap-1");
    value.extend_from_slice(&[0x12, 6]);
    value.extend_from_slice(b"disk-1");
    value.extend_from_slice(&[0x18, 0x80, 0x08]);
    prost_types::Any {
        type_url: "type.googleapis.com/opsd.example.v1.Snapshot".into(),
        value,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn descriptor_sets_print_producers_payloads_field_by_field() {
    let service = Arc::new(opsd_service::OperationService::new(
        Arc::new(opsd_store::MemoryStore::new()),
        Arc::new(opsd_core::SystemClock),
        Default::default(),
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(opsd_server::serve(
        listener,
        service,
        Default::default(),
        async {
            let _ = stopped.await;
        },
    ));
    let client = Client::connect(&address.to_string()).await.unwrap();
    let op = client
        .create(NewOperation::new("snapshot disk-1"))
        .await
        .unwrap();
    let id = op.operation.unwrap().id;
    client
        .complete(&id, Completion::Response(snapshot()))
        .await
        .unwrap();

    let set = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/snapshot-service/snapshot.binpb");
    let endpoint = address.to_string();
    let get = |extra: Vec<String>| {
        let endpoint = endpoint.clone();
        let id = id.clone();
        async move {
            let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_opsctl"))
                .args(["--endpoint", &endpoint, "--format", "json"])
                .args(extra)
                .args(["get", &id])
                .env_remove("OPSD_DESCRIPTOR_SETS")
                .env("HOME", std::env::temp_dir())
                .output()
                .await
                .unwrap();
            (
                output.status.code(),
                String::from_utf8_lossy(&output.stdout).into_owned(),
                String::from_utf8_lossy(&output.stderr).into_owned(),
            )
        }
    };

    let (code, stdout, stderr) = get(vec![]).await;
    assert_eq!(code, Some(0), "{stderr}");
    let opaque: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert!(opaque["response"]["value"].is_string(), "{stdout}");

    let (code, stdout, stderr) =
        get(vec!["--descriptor-set".into(), set.display().to_string()]).await;
    assert_eq!(code, Some(0), "{stderr}");
    let known: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        known["response"],
        serde_json::json!({
            "@type": "type.googleapis.com/opsd.example.v1.Snapshot",
            "snapshotId": "snap-1",
            "diskId": "disk-1",
            "sizeBytes": "1024",
        }),
        "{stdout}"
    );

    // A file that is not one is refused with its name, before any call.
    let (code, _, stderr) = get(vec!["--descriptor-set".into(), "/nonexistent.binpb".into()]).await;
    assert_ne!(code, Some(0));
    assert!(
        stderr.contains("--descriptor-set: cannot read /nonexistent.binpb"),
        "{stderr}"
    );

    let _ = stop.send(());
    server.await.unwrap().unwrap();
}
