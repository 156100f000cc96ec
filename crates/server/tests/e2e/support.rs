//! What every e2e module needs: a real server on port 0, stopped on demand.

use std::net::SocketAddr;
use std::sync::Arc;

use opsd_service::OperationService;
use tokio::sync::oneshot;

/// `opsd_server::serve` running on a free loopback port.
pub struct Listening {
    pub address: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl Listening {
    pub async fn start(service: Arc<OperationService>, options: opsd_server::ServeOptions) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(opsd_server::serve(listener, service, options, async {
            let _ = stopped.await;
        }));
        Self {
            address,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Stops accepting, lets open calls finish, and fails the test if serving failed.
    pub async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
    }
}

/// A test's size from the environment (the long runs in the README set
/// these), or its default: CI runs the defaults.
pub fn env_size(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(value) => value
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name} must be a whole number, got {value:?}")),
        Err(_) => default,
    }
}
