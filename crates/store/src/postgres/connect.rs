//! How opsd reaches PostgreSQL: the URL (libpq's `postgres://` or
//! `key=value` form, one host or many) and its TLS settings as libpq reads
//! them, through rustls.
//!
//! `tokio-postgres` parses hosts, ports, `target_session_attrs` and the
//! `sslmode`s `disable`, `prefer` and `require`; `sslmode=verify-ca`,
//! `verify-full`, `sslrootcert`, `sslcert` and `sslkey` are taken out of the
//! URL here and turned into a rustls client configuration:
//!
//! | sslmode | encrypted | certificate checked |
//! |---|---|---|
//! | `disable` | never | no |
//! | `prefer` (the default) | when the server offers it | no |
//! | `require` | always | no; with `sslrootcert`, the chain (as `verify-ca`) |
//! | `verify-ca` | always | chain up to `sslrootcert` |
//! | `verify-full` | always | chain, and the host name |
//!
//! `sslrootcert=system` trusts the public web roots. Whatever the mode, the
//! connection is made to the writable primary only (`target_session_attrs`
//! is forced to `read-write`): opsd writes on every connection it opens,
//! and notifications are sent by the primary alone.

use std::fmt::Write as _;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio_postgres::config::{SslMode as PgSslMode, TargetSessionAttrs};
use tokio_postgres_rustls::MakeRustlsConnect;

/// libpq's `sslmode`, all five that opsd supports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    fn parse(raw: &str) -> Result<Self, String> {
        Ok(match raw {
            "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            other => {
                return Err(format!(
                    "sslmode {other:?} is not supported (use disable, prefer, require, verify-ca or verify-full)"
                ));
            }
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

/// A parsed URL: what `tokio-postgres` connects with, and how.
#[derive(Clone)]
pub(crate) struct Target {
    pub config: tokio_postgres::Config,
    pub tls: MakeRustlsConnect,
    /// The mode in effect (`require` with `sslrootcert` is `verify-ca`).
    pub ssl_mode: SslMode,
}

/// The TLS parameters libpq reads and `tokio-postgres` does not.
#[derive(Debug, Default, PartialEq, Eq)]
struct TlsParams {
    sslmode: Option<String>,
    sslrootcert: Option<String>,
    sslcert: Option<String>,
    sslkey: Option<String>,
}

impl TlsParams {
    /// Takes `key=value` if it is one of ours; false if it is not.
    fn take(&mut self, key: &str, value: &str) -> bool {
        let slot = match key {
            "sslmode" => &mut self.sslmode,
            "sslrootcert" => &mut self.sslrootcert,
            "sslcert" => &mut self.sslcert,
            "sslkey" => &mut self.sslkey,
            _ => return false,
        };
        *slot = Some(value.to_owned());
        true
    }
}

/// Parses `url` for connections that must reach the writable primary.
pub(crate) fn target(url: &str) -> Result<Target, String> {
    let (rest, params) = split_tls_params(url)?;
    let mut config: tokio_postgres::Config = rest
        .parse()
        .map_err(|e| format!("invalid postgres url: {e}"))?;
    let mut ssl_mode = match &params.sslmode {
        Some(raw) => SslMode::parse(raw)?,
        None => SslMode::Prefer,
    };
    // As libpq: `require` with a root certificate checks the chain.
    if ssl_mode == SslMode::Require && params.sslrootcert.is_some() {
        ssl_mode = SslMode::VerifyCa;
    }
    config.ssl_mode(match ssl_mode {
        SslMode::Disable => PgSslMode::Disable,
        SslMode::Prefer => PgSslMode::Prefer,
        SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => PgSslMode::Require,
    });
    config.target_session_attrs(TargetSessionAttrs::ReadWrite);
    let tls = client_config(ssl_mode, &params)?;
    Ok(Target {
        config,
        tls: MakeRustlsConnect::new(tls),
        ssl_mode,
    })
}

/// The URL without the parameters [`TlsParams`] holds, and those parameters.
fn split_tls_params(url: &str) -> Result<(String, TlsParams), String> {
    let mut params = TlsParams::default();
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let Some((base, query)) = url.split_once('?') else {
            return Ok((url.to_owned(), params));
        };
        let mut kept = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            if !params.take(&percent_decode(key)?, &percent_decode(value)?) {
                kept.push(pair);
            }
        }
        let rest = if kept.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        return Ok((rest, params));
    }
    // key=value pairs, values optionally in single quotes with backslash escapes.
    let mut kept = String::new();
    let mut chars = url.char_indices().peekable();
    loop {
        while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
        let Some(&(start, _)) = chars.peek() else {
            break;
        };
        let mut key = String::new();
        while let Some((_, c)) = chars.next_if(|(_, c)| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
        if chars.next().map(|(_, c)| c) != Some('=') {
            return Err(format!("invalid postgres url: {key:?} has no value"));
        }
        while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if(|(_, c)| *c == '\'').is_some() {
            loop {
                match chars.next() {
                    Some((_, '\'')) => break,
                    Some((_, '\\')) => match chars.next() {
                        Some((_, c)) => value.push(c),
                        None => return Err("invalid postgres url: unterminated quote".into()),
                    },
                    Some((_, c)) => value.push(c),
                    None => return Err("invalid postgres url: unterminated quote".into()),
                }
            }
        } else {
            while let Some((_, c)) = chars.next_if(|(_, c)| !c.is_whitespace()) {
                value.push(c);
            }
        }
        let end = chars.peek().map_or(url.len(), |&(i, _)| i);
        if !params.take(&key, &value) {
            if !kept.is_empty() {
                kept.push(' ');
            }
            kept.push_str(url[start..end].trim_end());
        }
    }
    Ok((kept, params))
}

fn percent_decode(raw: &str) -> Result<String, String> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = raw
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("invalid postgres url: bad percent escape in {raw:?}"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("invalid postgres url: {raw:?} is not utf-8"))
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn client_config(mode: SslMode, params: &TlsParams) -> Result<ClientConfig, String> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("cannot set up tls: {e}"))?;
    let algorithms = provider.signature_verification_algorithms;
    let verifier: Arc<dyn ServerCertVerifier> = match mode {
        SslMode::Disable | SslMode::Prefer | SslMode::Require => {
            Arc::new(EncryptOnly { algorithms })
        }
        SslMode::VerifyCa | SslMode::VerifyFull => {
            let roots = root_store(mode, params.sslrootcert.as_deref())?;
            let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(
                Arc::new(roots),
                Arc::clone(&provider),
            )
            .build()
            .map_err(|e| format!("sslrootcert: {e}"))?;
            if mode == SslMode::VerifyFull {
                webpki
            } else {
                Arc::new(ChainOnly { inner: webpki })
            }
        }
    };
    let builder = builder
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    match (&params.sslcert, &params.sslkey) {
        (None, None) => Ok(builder.with_no_client_auth()),
        (Some(cert), Some(key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .map_err(|e| format!("sslcert {cert}: {e}"))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("sslcert {cert}: {e}"))?;
            if chain.is_empty() {
                return Err(format!("sslcert {cert} holds no certificate"));
            }
            let key_der =
                PrivateKeyDer::from_pem_file(key).map_err(|e| format!("sslkey {key}: {e}"))?;
            builder
                .with_client_auth_cert(chain, key_der)
                .map_err(|e| format!("sslcert {cert} and sslkey {key}: {e}"))
        }
        (Some(_), None) => Err("sslcert needs sslkey (the client certificate's key)".into()),
        (None, Some(_)) => Err("sslkey needs sslcert (the client certificate)".into()),
    }
}

fn root_store(mode: SslMode, sslrootcert: Option<&str>) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    match sslrootcert {
        None => {
            return Err(format!(
                "sslmode={} needs sslrootcert (the CA certificate file, or system for the public roots)",
                mode.as_str()
            ));
        }
        Some("system") => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| format!("sslrootcert {path}: {e}"))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("sslrootcert {path}: {e}"))?;
            let (added, _ignored) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(format!("sslrootcert {path} holds no usable certificate"));
            }
        }
    }
    Ok(roots)
}

/// `sslmode=prefer` and `require` without a root certificate: encrypted,
/// but any certificate is taken (libpq's behaviour). Signatures are still
/// checked, so the handshake itself is sound.
#[derive(Debug)]
struct EncryptOnly {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for EncryptOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// `sslmode=verify-ca`: the chain must lead to a trusted root; the host
/// name is not checked.
#[derive(Debug)]
struct ChainOnly {
    inner: Arc<rustls::client::WebPkiServerVerifier>,
}

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // The name is checked last, once the chain has passed.
        match self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// A connection failure in words an operator can act on: the error with
/// its causes, and what a certificate problem means.
pub(crate) fn describe_connect_error(e: &tokio_postgres::Error, ssl_mode: SslMode) -> String {
    let mut message = e.to_string();
    let mut source = std::error::Error::source(e);
    let mut hint = None;
    while let Some(cause) = source {
        let rustls_error = cause.downcast_ref::<rustls::Error>().or_else(|| {
            cause
                .downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        });
        if let Some(rustls::Error::InvalidCertificate(problem)) = rustls_error {
            hint = Some(match problem {
                CertificateError::UnknownIssuer | CertificateError::BadSignature => {
                    "the server's certificate is not signed by a CA in sslrootcert".to_owned()
                }
                CertificateError::NotValidForName
                | CertificateError::NotValidForNameContext { .. } => {
                    "the server's certificate does not name the host in the url \
                     (sslmode=verify-full checks the host name, verify-ca does not)"
                        .to_owned()
                }
                CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                    "the server's certificate has expired".to_owned()
                }
                other => format!("the server's certificate is refused: {other:?}"),
            });
        }
        if !message.contains(&cause.to_string()) {
            let _ = write!(message, ": {cause}");
        }
        source = cause.source();
    }
    if let Some(hint) = hint {
        let _ = write!(message, " ({hint}; sslmode={})", ssl_mode.as_str());
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(url: &str) -> (String, TlsParams) {
        split_tls_params(url).unwrap()
    }

    #[test]
    fn tls_parameters_leave_url_forms() {
        let (rest, params) = split(
            "postgres://u:p@a:5432,b:5433/opsd?sslmode=verify-full&target_session_attrs=read-write&sslrootcert=%2Fetc%2Fca.pem",
        );
        assert_eq!(
            rest,
            "postgres://u:p@a:5432,b:5433/opsd?target_session_attrs=read-write"
        );
        assert_eq!(params.sslmode.as_deref(), Some("verify-full"));
        assert_eq!(params.sslrootcert.as_deref(), Some("/etc/ca.pem"));
        let (rest, params) = split("postgres://u@h/db?sslmode=require");
        assert_eq!(rest, "postgres://u@h/db");
        assert_eq!(params.sslmode.as_deref(), Some("require"));
        assert_eq!(split("postgres://u@h/db").0, "postgres://u@h/db");
    }

    #[test]
    fn tls_parameters_leave_key_value_forms() {
        let (rest, params) = split(
            "host=a,b user=opsd sslmode = verify-ca sslrootcert='/etc/my ca.pem' password='it\\'s' sslcert=/c sslkey=/k",
        );
        assert_eq!(rest, "host=a,b user=opsd password='it\\'s'");
        assert_eq!(params.sslmode.as_deref(), Some("verify-ca"));
        assert_eq!(params.sslrootcert.as_deref(), Some("/etc/my ca.pem"));
        assert_eq!(params.sslcert.as_deref(), Some("/c"));
        assert_eq!(params.sslkey.as_deref(), Some("/k"));
        let config: tokio_postgres::Config = rest.parse().unwrap();
        assert_eq!(config.get_password(), Some(&b"it's"[..]));
        assert!(split_tls_params("host=a sslmode='x").is_err());
        assert!(split_tls_params("host").is_err());
    }

    #[test]
    fn odd_urls_are_refused_or_parsed_never_panic() {
        for odd in [
            "",
            "=",
            "'",
            "a='\\",
            "a = ",
            "ä=ö sslmode='verify-ca' ü",
            "postgres://",
            "postgres://?",
            "postgres://h?&&",
            "postgres://h?%",
            "postgres://h?sslmode=%zz",
            "postgres://h?sslmode=%E2%82",
            "postgres://h?sslrootcert",
            "postgresql://h/db?sslmode=verify-full&sslrootcert=%2F%00",
        ] {
            let _ = split_tls_params(odd);
            let _ = target(odd);
        }
        assert_eq!(
            split("ä=ö sslmode='verify-ca' ü=1").0,
            "ä=ö ü=1",
            "multibyte text is kept whole"
        );
    }

    #[test]
    fn modes_and_their_needs() {
        let t = target("postgres://u@h/db").unwrap();
        assert_eq!(t.ssl_mode, SslMode::Prefer);
        assert_eq!(t.config.get_ssl_mode(), PgSslMode::Prefer);
        assert_eq!(
            t.config.get_target_session_attrs(),
            TargetSessionAttrs::ReadWrite
        );
        let t = target("postgres://u@h/db?sslmode=disable").unwrap();
        assert_eq!(t.config.get_ssl_mode(), PgSslMode::Disable);
        let e = target("postgres://u@h/db?sslmode=verify-full")
            .err()
            .unwrap();
        assert!(e.contains("needs sslrootcert"), "{e}");
        let e = target("postgres://u@h/db?sslmode=allow").err().unwrap();
        assert!(e.contains("sslmode \"allow\" is not supported"), "{e}");
        let e = target("postgres://u@h/db?sslmode=verify-ca&sslrootcert=/nonexistent/ca.pem")
            .err()
            .unwrap();
        assert!(e.starts_with("sslrootcert /nonexistent/ca.pem"), "{e}");
        let e = target("postgres://u@h/db?sslcert=/c").err().unwrap();
        assert!(e.contains("sslcert needs sslkey"), "{e}");
        let t = target("postgres://u@h/db?sslmode=verify-full&sslrootcert=system").unwrap();
        assert_eq!(t.ssl_mode, SslMode::VerifyFull);
        assert_eq!(t.config.get_ssl_mode(), PgSslMode::Require);
        let e = target("postgres://u@h/db?nonsense=1").err().unwrap();
        assert!(e.starts_with("invalid postgres url"), "{e}");
    }
}
