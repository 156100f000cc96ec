//! The example's message types as a producer hands them to opsd: the
//! committed `snapshot.binpb` (a FileDescriptorSet of `proto/`) matches the
//! `.proto` and the Rust type, and with it opsd's REST gateway prints a
//! `Snapshot` response field by field instead of as base64.
//!
//! `OPSD_WRITE_DESCRIPTOR_SETS=1 cargo test -p opsd-example-snapshot --test
//! descriptor_set` rewrites the file after a change to the `.proto`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use opsd_client::{Client, Completion, NewOperation};
use opsd_example_snapshot::Snapshot;
use prost::Message;

fn example_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

fn compiled() -> Vec<u8> {
    let proto = example_dir().join("proto");
    protox::compile(["opsd/example/v1/snapshot.proto"], [proto])
        .expect("the example's proto compiles")
        .encode_to_vec()
}

#[test]
fn the_committed_descriptor_set_is_the_protos() {
    let path = example_dir().join("snapshot.binpb");
    let want = compiled();
    if std::env::var("OPSD_WRITE_DESCRIPTOR_SETS").as_deref() == Ok("1") {
        std::fs::write(&path, &want).unwrap();
    }
    let have = std::fs::read(&path).expect("snapshot.binpb is committed");
    assert!(
        have == want,
        "snapshot.binpb is stale: run OPSD_WRITE_DESCRIPTOR_SETS=1 cargo test -p opsd-example-snapshot --test descriptor_set"
    );
    // And it describes the Rust type: the same fields, numbers and kinds.
    let pool = prost_reflect::DescriptorPool::decode(have.as_slice()).unwrap();
    let message = pool
        .get_message_by_name("opsd.example.v1.Snapshot")
        .unwrap();
    let snapshot = Snapshot {
        snapshot_id: "snap-1".into(),
        disk_id: "disk-1".into(),
        size_bytes: 1 << 40,
    };
    let dynamic =
        prost_reflect::DynamicMessage::decode(message, snapshot.encode_to_vec().as_slice())
            .unwrap();
    assert!(dynamic.unknown_fields().next().is_none());
    assert_eq!(dynamic.encode_to_vec(), snapshot.encode_to_vec());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_descriptor_set_rest_prints_snapshots_field_by_field() {
    let set = example_dir().join("snapshot.binpb");
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
    let snapshot = Snapshot {
        snapshot_id: "snap-1".into(),
        disk_id: "disk-1".into(),
        size_bytes: 1024,
    };
    let op = client
        .create(NewOperation::new("snapshot disk-1"))
        .await
        .unwrap();
    let id = op.operation.unwrap().id;
    client
        .complete(&id, Completion::Response(opsd_client::pack(&snapshot)))
        .await
        .unwrap();
    let http = reqwest::Client::new();
    let get = || async {
        http.get(format!("http://{address}/v1/operations/{id}"))
            .send()
            .await
            .unwrap()
            .json::<serde_json::Value>()
            .await
            .unwrap()
    };
    // Unknown to opsd: its bytes, in base64.
    let opaque = get().await;
    let response = &opaque["operation"]["response"];
    assert_eq!(
        response["@type"],
        "type.googleapis.com/opsd.example.v1.Snapshot"
    );
    assert!(response["value"].is_string(), "{response}");

    let added = opsd_proto::json::register_descriptor_set_file(&set).unwrap();
    assert_eq!(added, ["opsd.example.v1.Snapshot"]);
    let known = get().await;
    assert_eq!(
        known["operation"]["response"],
        serde_json::json!({
            "@type": "type.googleapis.com/opsd.example.v1.Snapshot",
            "snapshotId": "snap-1",
            "diskId": "disk-1",
            "sizeBytes": "1024",
        })
    );
    // Producers may now send the type as JSON over REST too.
    let created = http
        .post(format!("http://{address}/v1/operations"))
        .json(&serde_json::json!({
            "description": "snapshot disk-2",
            "metadata": {"@type": "type.googleapis.com/opsd.example.v1.Snapshot", "diskId": "disk-2"},
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 200);
    let created: serde_json::Value = created.json().await.unwrap();
    assert_eq!(created["operation"]["metadata"]["diskId"], "disk-2");

    // A file that is not a descriptor set is refused, naming it, and changes nothing.
    let dir = std::env::temp_dir().join(format!("opsd-descriptor-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.binpb");
    std::fs::write(&bad, b"\xff\xff not protobuf").unwrap();
    let error = opsd_proto::json::register_descriptor_set_file(&bad).unwrap_err();
    assert!(error.to_string().contains("bad.binpb"), "{error}");
    let missing =
        opsd_proto::json::register_descriptor_set_file(&dir.join("missing.binpb")).unwrap_err();
    assert!(missing.to_string().starts_with("cannot read"), "{missing}");
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(get().await, known);

    let _ = stop.send(());
    server.await.unwrap().unwrap();
}
