//! Profiles: named connection settings in `~/.config/opsd/config.toml`
//! (or `$XDG_CONFIG_HOME/opsd/config.toml`, or the file `OPSD_CONFIG` names).
//! Flags and environment variables override the chosen profile.
//!
//! ```toml
//! default_profile = "prod"
//!
//! [profiles.local]
//! endpoint = "127.0.0.1:7117"
//!
//! [profiles.prod]
//! endpoint = "https://opsd.example.internal:443"
//! token = "opsd_…"
//! ca = "/etc/opsd/ca.pem"
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Deserialize;

/// The endpoint when neither a flag, the environment nor a profile names one.
pub const DEFAULT_ENDPOINT: &str = "127.0.0.1:7117";

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    default_profile: Option<String>,
    #[serde(default)]
    profiles: BTreeMap<String, Profile>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    pub endpoint: Option<String>,
    pub token: Option<String>,
    pub ca: Option<PathBuf>,
}

/// The config file's path: `OPSD_CONFIG`, else the XDG location.
pub fn config_path() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("OPSD_CONFIG") {
        return Some(PathBuf::from(path));
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".config")))?;
    Some(base.join("opsd/config.toml"))
}

/// The profile to use: `name` if given (it must exist), else the file's
/// default profile, else `default`, else none. A missing file is no profile.
pub fn load(path: Option<&Path>, name: Option<&str>) -> anyhow::Result<Profile> {
    let file = match path {
        Some(path) if path.exists() => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            toml::from_str::<File>(&text)
                .with_context(|| format!("invalid opsctl config {}", path.display()))?
        }
        _ => File::default(),
    };
    match name.map(str::to_owned).or(file.default_profile.clone()) {
        Some(name) => file.profiles.get(&name).cloned().with_context(|| {
            format!(
                "no profile {name} in {}",
                path.map_or("the config file".into(), |p| p.display().to_string())
            )
        }),
        None => Ok(file.profiles.get("default").cloned().unwrap_or_default()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), text).unwrap();
        file
    }

    #[test]
    fn profiles_are_chosen_by_name_then_default() {
        let config = file(
            "default_profile = \"prod\"\n[profiles.prod]\nendpoint = \"https://p:443\"\ntoken = \"t\"\n\
             [profiles.local]\nendpoint = \"127.0.0.1:1\"\n",
        );
        let prod = load(Some(config.path()), None).unwrap();
        assert_eq!(prod.endpoint.as_deref(), Some("https://p:443"));
        assert_eq!(prod.token.as_deref(), Some("t"));
        let local = load(Some(config.path()), Some("local")).unwrap();
        assert_eq!(local.endpoint.as_deref(), Some("127.0.0.1:1"));
        assert!(load(Some(config.path()), Some("missing")).is_err());
    }

    #[test]
    fn no_file_means_no_profile_and_bad_files_say_why() {
        assert_eq!(
            load(Some(Path::new("/nonexistent/opsd.toml")), None).unwrap(),
            Profile::default()
        );
        let bad = file("[profiles.x]\nendpont = \"typo\"\n");
        let error = format!("{:#}", load(Some(bad.path()), Some("x")).unwrap_err());
        assert!(error.contains("endpont"), "{error}");
    }
}
