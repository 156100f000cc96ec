//! The example producer against a real opsd.

use std::sync::Arc;
use std::time::Duration;

use opsd_client::{Client, ClientError, OperationExt, WaitOptions};
use opsd_example_snapshot::{Snapshot, Work, start, work};

async fn opsd() -> (Client, tokio::sync::oneshot::Sender<()>) {
    let service = Arc::new(opsd_service::OperationService::new(
        Arc::new(opsd_store::MemoryStore::new()),
        Arc::new(opsd_core::SystemClock),
        Default::default(),
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(opsd_server::serve(
        listener,
        service,
        Default::default(),
        async {
            let _ = stopped.await;
        },
    ));
    (Client::connect(&address.to_string()).await.unwrap(), stop)
}

fn quick() -> Work {
    Work {
        steps: 5,
        step_time: Duration::from_millis(50),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_runs_in_steps_and_completes_with_a_typed_response() {
    let (client, _stop) = opsd().await;
    let operation = start(&client, "disk-1").await.unwrap();
    let id = operation.id().to_owned();
    assert!(id.starts_with("snp"));
    // One snapshot per disk at a time.
    assert!(start(&client, "disk-1").await.is_err());
    tokio::spawn(async move { work(operation, "disk-1", &quick()).await.unwrap() });
    let done = client
        .wait_until_done(&id, WaitOptions::default())
        .await
        .unwrap();
    let snapshot: Snapshot = done.response().unwrap();
    assert_eq!(snapshot.disk_id, "disk-1");
    assert_eq!(done.progress.unwrap().work_done, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_snapshot_stops_and_says_so() {
    let (client, _stop) = opsd().await;
    let operation = start(&client, "disk-2").await.unwrap();
    let id = operation.id().to_owned();
    let slow = Work {
        steps: 100,
        step_time: Duration::from_millis(100),
    };
    tokio::spawn(async move { work(operation, "disk-2", &slow).await.unwrap() });
    client.cancel(&id).await.unwrap();
    match client.wait_until_done(&id, WaitOptions::default()).await {
        Err(ClientError::OperationFailed { status, .. }) => assert_eq!(status.code, 1),
        other => panic!("expected a cancelled snapshot, got {other:?}"),
    }
}

#[test]
fn responses_use_the_type_url_the_official_sdks_expect() {
    let any = opsd_client::pack(&Snapshot::default());
    assert_eq!(any.type_url, "type.googleapis.com/opsd.example.v1.Snapshot");
}
