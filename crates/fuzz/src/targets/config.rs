//! Configuration files, as `opsd --config FILE` reads them.

use std::path::Path;
use std::time::Duration;

use opsd_server::config::{
    Config, format_duration, format_size, parse_duration, parse_size, parse_store, redact_url,
};

pub const DICTIONARY: &[&[u8]] = &[
    b"listen = ",
    b"\"127.0.0.1:7117\"",
    b"\"[::1]:0\"",
    b"data_dir = ",
    b"store = ",
    b"\"sqlite\"",
    b"\"memory\"",
    b"\"postgres://opsd:secret@db:5432/opsd\"",
    b"tls_cert = ",
    b"tls_key = ",
    b"public_address = ",
    b"endpoint_ids = ",
    b"[\"compute\", \"iam=iam.example:443\"]",
    b"tokens_file = ",
    b"jwt_public_keys = ",
    b"jwt_audience = ",
    b"jwt_leeway = ",
    b"iam_signing_key = ",
    b"iam_token_lifetime = ",
    b"iam_audiences = ",
    b"\"12h\"",
    b"\"https://iam.opsd.example/iam/v1/tokens\"",
    b"postgres_max_connections = ",
    b"postgres_listen_url = ",
    b"postgres_pooler = ",
    b"\"transaction\"",
    b"no_migrate = ",
    b"\"postgres://opsd@a:5432,b:5432/opsd?target_session_attrs=read-write&sslmode=verify-full&sslrootcert=/etc/opsd/ca.pem\"",
    b"store_timeout = ",
    b"id_prefix = ",
    b"\"fhm\"",
    b"retention = ",
    b"poll_interval = ",
    b"max_wait = ",
    b"reaper_interval = ",
    b"retention_interval = ",
    b"shutdown_grace = ",
    b"log_format = ",
    b"console_trace_url = ",
    b"\"https://jaeger.internal/trace/{trace_id}\"",
    b"console_stuck_after = ",
    b"\"json\"",
    b"max_message_size = ",
    b"\"4MiB\"",
    b"\"1GiB\"",
    b"max_streams_per_connection = ",
    b"max_watchers_per_connection = ",
    b"max_watchers = ",
    b"\"30d\"",
    b"\"500ms\"",
    b"\"18446744073709551615ms\"",
    b"9223372036854775807",
    b"-1",
    b"0",
    b"[section]",
    b"[[array]]",
    b"'''",
    b"\"\"\"",
    b"\\u0000",
    b"# comment",
    b"\n",
    b"=",
    b"true",
    b"1979-05-27T07:32:00Z",
    b"inf",
    b"nan",
    b"{ a = 1 }",
];

/// Loads the input as a configuration file. A file that loads prints
/// (`--print-config`) to a file that loads to the same configuration; a file
/// that does not load is refused with a message naming the file. The pieces
/// (durations, sizes, store URLs) round-trip through their printers.
pub fn run(data: &[u8]) -> String {
    let text = String::from_utf8_lossy(data);
    let path = Path::new("fuzz.toml");
    let label = match Config::from_file_text(path, &text) {
        Ok(config) => {
            let printed = config.to_toml();
            let again = Config::from_file_text(path, &printed).unwrap_or_else(|e| {
                panic!("the printed configuration does not load: {e:#}\n{printed}")
            });
            assert_eq!(again.to_toml(), printed, "printing is stable");
            assert_eq!(again.limits(), config.limits());
            assert_eq!(again.listen, config.listen);
            assert_eq!(again.retention, config.retention);
            "loaded".to_owned()
        }
        Err(error) => {
            let message = format!("{error:#}");
            assert!(
                message.starts_with("config file fuzz.toml"),
                "refusals name the file: {message}"
            );
            // The key the refusal blames, when it is a real one: the rest of
            // the message may quote the input, which is no behaviour of its own.
            let prefix = "config file fuzz.toml: key ";
            let key = message
                .strip_prefix(prefix)
                .and_then(|rest| rest.split(':').next())
                .filter(|key| {
                    <Config as clap::CommandFactory>::command()
                        .get_arguments()
                        .any(|a| a.get_id() == *key)
                });
            let reason = match key {
                Some(key) => key,
                None if message.starts_with(prefix) => "unknown-key",
                None => "file",
            };
            format!("refused:{reason}")
        }
    };

    // The value parsers on their own, with the same text.
    let value = text.trim();
    if let Ok(duration) = parse_duration(value) {
        assert_eq!(parse_duration(&format_duration(duration)), Ok(duration));
        assert!(duration <= Duration::from_millis(u64::MAX));
    }
    if let Ok(size) = parse_size(value) {
        assert_eq!(parse_size(&format_size(size)), Ok(size));
    }
    if parse_store(value).is_ok() {
        let redacted = redact_url(value);
        assert_eq!(redact_url(&redacted), redacted, "redaction is stable");
        // The authority: up to the path or query, as the database driver reads it.
        let authority = |url: &str| {
            url.split_once("://")
                .map(|(_, rest)| rest.split(['/', '?']).next().unwrap_or("").to_owned())
                .unwrap_or_default()
        };
        if let Some((userinfo, _)) = authority(value).rsplit_once('@')
            && let Some((_, password)) = userinfo.split_once(':')
            && !password.is_empty()
            && password != "***"
        {
            // The same text elsewhere (a database named like the password) is no leak.
            assert!(
                !authority(&redacted).contains(&format!(":{password}@")),
                "the password shows in {redacted}"
            );
        }
    }
    label
}
