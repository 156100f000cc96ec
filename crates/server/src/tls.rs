//! TLS for the public listener, with certificates reloaded in place.
//!
//! New handshakes pick up the current certificate; open connections keep
//! theirs, so a reload (SIGHUP, or the files changing on disk) drops nothing.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use anyhow::Context;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// The certificate and key files, and what was last loaded from them.
#[derive(Debug)]
pub struct ReloadingCertificate {
    cert_path: PathBuf,
    key_path: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
    loaded_versions: RwLock<(Option<SystemTime>, Option<SystemTime>)>,
}

impl ReloadingCertificate {
    pub fn load(cert_path: &Path, key_path: &Path) -> anyhow::Result<Arc<Self>> {
        let key = read(cert_path, key_path)?;
        Ok(Arc::new(Self {
            cert_path: cert_path.to_owned(),
            key_path: key_path.to_owned(),
            current: RwLock::new(Arc::new(key)),
            loaded_versions: RwLock::new(versions(cert_path, key_path)),
        }))
    }

    /// Reads the files again; on failure the old certificate stays in use.
    pub fn reload(&self) -> anyhow::Result<()> {
        let versions = versions(&self.cert_path, &self.key_path);
        let key = read(&self.cert_path, &self.key_path)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(key);
        *self
            .loaded_versions
            .write()
            .unwrap_or_else(|p| p.into_inner()) = versions;
        Ok(())
    }

    fn changed_on_disk(&self) -> bool {
        *self
            .loaded_versions
            .read()
            .unwrap_or_else(|p| p.into_inner())
            != versions(&self.cert_path, &self.key_path)
    }

    /// The rustls configuration for the listener (HTTP/2 and HTTP/1.1 by ALPN).
    pub fn server_config(self: &Arc<Self>) -> anyhow::Result<Arc<rustls::ServerConfig>> {
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .context("tls protocol versions")?
        .with_no_client_auth()
        .with_cert_resolver(Arc::clone(self) as Arc<dyn ResolvesServerCert>);
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }

    /// Reloads on SIGHUP and whenever either file changes (checked every `every`).
    pub fn spawn_reloader(self: &Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        let certificate = Arc::clone(self);
        tokio::spawn(async move {
            #[cfg(unix)]
            let mut hangups =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
            let mut ticks = tokio::time::interval(every);
            loop {
                #[cfg(unix)]
                let hangup = async {
                    match hangups.as_mut() {
                        Some(signal) => {
                            signal.recv().await;
                        }
                        None => std::future::pending::<()>().await,
                    }
                };
                #[cfg(not(unix))]
                let hangup = std::future::pending::<()>();
                let reason = tokio::select! {
                    () = hangup => "SIGHUP",
                    _ = ticks.tick() => {
                        if !certificate.changed_on_disk() {
                            continue;
                        }
                        "files changed"
                    }
                };
                match certificate.reload() {
                    Ok(()) => {
                        tracing::info!(reason, cert = %certificate.cert_path.display(), "tls certificate reloaded")
                    }
                    Err(e) => tracing::warn!(
                        reason,
                        error = format!("{e:#}"),
                        "tls certificate reload failed, keeping the old one"
                    ),
                }
            }
        })
    }
}

impl ResolvesServerCert for ReloadingCertificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(
            &self.current.read().unwrap_or_else(|p| p.into_inner()),
        ))
    }
}

fn versions(cert: &Path, key: &Path) -> (Option<SystemTime>, Option<SystemTime>) {
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    (modified(cert), modified(key))
}

fn read(cert_path: &Path, key_path: &Path) -> anyhow::Result<CertifiedKey> {
    let certs = CertificateDer::pem_file_iter(cert_path)
        .with_context(|| format!("cannot read tls certificate {}", cert_path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("invalid pem in {}", cert_path.display()))?;
    anyhow::ensure!(
        !certs.is_empty(),
        "no certificate in {}",
        cert_path.display()
    );
    let key = PrivateKeyDer::from_pem_file(key_path)
        .with_context(|| format!("cannot read tls key {}", key_path.display()))?;
    let signing_key = rustls::crypto::ring::sign::any_supported_type(&key)
        .with_context(|| format!("unsupported tls key in {}", key_path.display()))?;
    let certified = CertifiedKey::new(certs, signing_key);
    certified.keys_match().with_context(|| {
        format!(
            "{} does not match {}",
            key_path.display(),
            cert_path.display()
        )
    })?;
    Ok(certified)
}
