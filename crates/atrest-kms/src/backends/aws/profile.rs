//! The environment and the shared AWS files (`~/.aws/config`, `~/.aws/credentials`), as the AWS
//! CLI and SDKs read them: which profile is active, its properties, and the region.
//!
//! * Files: `AWS_CONFIG_FILE` (default `~/.aws/config`, sections `[default]` and
//!   `[profile NAME]`) and `AWS_SHARED_CREDENTIALS_FILE` (default `~/.aws/credentials`, sections
//!   `[NAME]`); a property in the credentials file wins over the same one in the config file.
//!   Missing files are fine (no profiles); an unreadable one is an error naming it.
//! * Profile: `AWS_PROFILE` (else `default`). Naming a profile that exists in neither file is an
//!   error, as in the SDKs; the implicit `default` may be absent.
//! * Region: `AWS_REGION`, then `AWS_DEFAULT_REGION`, then the profile's `region`; the EC2
//!   instance metadata region is the last resort ([`super::credentials`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A snapshot of the process environment (tests build their own).
#[derive(Debug, Clone, Default)]
pub struct Env(BTreeMap<String, String>);

impl Env {
    /// The variables of this process.
    pub fn from_process() -> Env {
        Env(std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .collect())
    }

    /// An environment with exactly these variables.
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Env {
        Env(pairs
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect())
    }

    /// The variable, if set and not empty (an empty variable counts as unset, as in the SDKs).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    fn home(&self) -> Option<PathBuf> {
        self.get("HOME").map(PathBuf::from)
    }
}

/// Why the shared files could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("AWS profile {name:?} (from AWS_PROFILE) is in neither {config} nor {credentials}")]
    NoSuchProfile {
        name: String,
        config: String,
        credentials: String,
    },
}

/// The properties of every profile in both files.
#[derive(Debug, Clone, Default)]
pub struct ProfileSet {
    profiles: BTreeMap<String, BTreeMap<String, String>>,
    config_file: Option<PathBuf>,
    credentials_file: Option<PathBuf>,
}

/// One profile's properties (keys lower-cased).
pub type Profile = BTreeMap<String, String>;

impl ProfileSet {
    /// Reads both files the environment points at.
    pub fn load(env: &Env) -> Result<ProfileSet, ProfileError> {
        let home = env.home();
        let config_file = env
            .get("AWS_CONFIG_FILE")
            .map(expand_home(home.as_deref()))
            .or_else(|| home.as_ref().map(|h| h.join(".aws/config")));
        let credentials_file = env
            .get("AWS_SHARED_CREDENTIALS_FILE")
            .map(expand_home(home.as_deref()))
            .or_else(|| home.as_ref().map(|h| h.join(".aws/credentials")));
        let mut set = ProfileSet {
            profiles: BTreeMap::new(),
            config_file: config_file.clone(),
            credentials_file: credentials_file.clone(),
        };
        if let Some(path) = &config_file {
            if let Some(text) = read_optional(path)? {
                for (section, props) in parse_ini(&text) {
                    let name = if section == "default" {
                        "default".to_string()
                    } else if let Some(n) = section.strip_prefix("profile ") {
                        n.trim().to_string()
                    } else {
                        // [sso-session …], [services …]: not profiles.
                        continue;
                    };
                    set.profiles.entry(name).or_default().extend(props);
                }
            }
        }
        if let Some(path) = &credentials_file {
            if let Some(text) = read_optional(path)? {
                for (section, props) in parse_ini(&text) {
                    set.profiles.entry(section).or_default().extend(props);
                }
            }
        }
        Ok(set)
    }

    /// The active profile's name (`AWS_PROFILE`, else `default`) and whether it was asked for.
    pub fn active_name(env: &Env) -> (String, bool) {
        match env.get("AWS_PROFILE") {
            Some(p) => (p.to_string(), true),
            None => ("default".to_string(), false),
        }
    }

    /// The active profile: `None` for an absent implicit `default`, an error for an absent
    /// profile named by `AWS_PROFILE`.
    pub fn active(&self, env: &Env) -> Result<Option<(&str, &Profile)>, ProfileError> {
        let (name, explicit) = Self::active_name(env);
        match self.profiles.get_key_value(&name) {
            Some((n, p)) => Ok(Some((n.as_str(), p))),
            None if explicit => Err(ProfileError::NoSuchProfile {
                name,
                config: display(&self.config_file),
                credentials: display(&self.credentials_file),
            }),
            None => Ok(None),
        }
    }

    /// A profile by name (for `source_profile`).
    pub fn get(&self, name: &str) -> Option<&Profile> {
        self.profiles.get(name)
    }

    /// Where the files are, for messages.
    pub fn describe(&self) -> String {
        format!(
            "{} and {}",
            display(&self.config_file),
            display(&self.credentials_file)
        )
    }
}

/// Region from the environment or the active profile (not from instance metadata).
pub fn region(env: &Env, profiles: &ProfileSet) -> Option<String> {
    if let Some(r) = env
        .get("AWS_REGION")
        .or_else(|| env.get("AWS_DEFAULT_REGION"))
    {
        return Some(r.to_string());
    }
    let (_, profile) = profiles.active(env).ok()??;
    profile.get("region").filter(|r| !r.is_empty()).cloned()
}

fn display(p: &Option<PathBuf>) -> String {
    p.as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "(no HOME)".into())
}

fn expand_home(home: Option<&Path>) -> impl Fn(&str) -> PathBuf + '_ {
    move |p| match (p.strip_prefix("~/"), home) {
        (Some(rest), Some(h)) => h.join(rest),
        _ => PathBuf::from(p),
    }
}

fn read_optional(path: &Path) -> Result<Option<String>, ProfileError> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(ProfileError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// The AWS flavour of INI: `[section]`, `key = value`, `#`/`;` comments, and indented
/// sub-properties under a key with an empty value (`s3 =\n  max_concurrent_requests = 2`),
/// which no credential setting uses and are skipped.
fn parse_ini(text: &str) -> Vec<(String, Profile)> {
    let mut out: Vec<(String, Profile)> = Vec::new();
    let mut in_sub = false;
    for raw in text.lines() {
        let indented = raw.starts_with([' ', '\t']);
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(section) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            out.push((section.trim().to_string(), Profile::new()));
            in_sub = false;
            continue;
        }
        if indented && in_sub {
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let (k, v) = (k.trim().to_ascii_lowercase(), strip_comment(v.trim()));
        in_sub = v.is_empty();
        if let Some((_, props)) = out.last_mut() {
            if !v.is_empty() {
                props.insert(k, v.to_string());
            }
        }
    }
    out
}

/// `value # comment` (a comment needs whitespace before it, as in the SDKs).
fn strip_comment(v: &str) -> &str {
    for (i, _) in v.match_indices([' ', '\t']) {
        let rest = v[i..].trim_start();
        if rest.starts_with('#') || rest.starts_with(';') {
            return v[..i].trim_end();
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(config: &str, creds: &str) -> (tempfile::TempDir, Env) {
        let dir = tempfile::tempdir().unwrap();
        let c = dir.path().join("config");
        let k = dir.path().join("credentials");
        std::fs::write(&c, config).unwrap();
        std::fs::write(&k, creds).unwrap();
        let env = Env::from_pairs([
            ("AWS_CONFIG_FILE", c.to_str().unwrap()),
            ("AWS_SHARED_CREDENTIALS_FILE", k.to_str().unwrap()),
        ]);
        (dir, env)
    }

    #[test]
    fn profiles_from_both_files_credentials_win() {
        let (_d, env) = files(
            "[default]\nregion = eu-west-1 # home\n[profile ops]\nregion=us-east-2\nrole_arn = arn:aws:iam::1:role/x\ns3 =\n  region = nope\n[sso-session s]\nsso_region = x\n",
            "[ops]\naws_access_key_id = AKIAOPS\naws_secret_access_key = s#ecret\n; comment\n[default]\nregion = ap-south-1\n",
        );
        let set = ProfileSet::load(&env).unwrap();
        let (name, p) = set.active(&env).unwrap().unwrap();
        assert_eq!(name, "default");
        assert_eq!(p["region"], "ap-south-1");
        let ops = set.get("ops").unwrap();
        assert_eq!(
            ops["region"], "us-east-2",
            "indented sub-properties are skipped"
        );
        assert_eq!(ops["aws_secret_access_key"], "s#ecret");
        assert_eq!(ops["role_arn"], "arn:aws:iam::1:role/x");
        assert!(set.get("sso-session s").is_none() && set.get("s").is_none());
    }

    #[test]
    fn region_order_env_then_profile() {
        let (_d, mut env) = files("[profile p]\nregion = us-west-2\n", "");
        env.0.insert("AWS_PROFILE".into(), "p".into());
        let set = ProfileSet::load(&env).unwrap();
        assert_eq!(region(&env, &set).as_deref(), Some("us-west-2"));
        env.0
            .insert("AWS_DEFAULT_REGION".into(), "eu-north-1".into());
        assert_eq!(region(&env, &set).as_deref(), Some("eu-north-1"));
        env.0.insert("AWS_REGION".into(), "eu-central-1".into());
        assert_eq!(region(&env, &set).as_deref(), Some("eu-central-1"));
    }

    #[test]
    fn named_profile_must_exist_default_may_not() {
        let (_d, mut env) = files("", "");
        let set = ProfileSet::load(&env).unwrap();
        assert!(set.active(&env).unwrap().is_none());
        env.0.insert("AWS_PROFILE".into(), "missing".into());
        let e = set.active(&env).unwrap_err().to_string();
        assert!(e.contains("\"missing\"") && e.contains("config"), "{e}");
    }

    #[test]
    fn missing_files_are_no_profiles() {
        let env = Env::from_pairs([
            ("AWS_CONFIG_FILE", "/nonexistent/atrest/config"),
            (
                "AWS_SHARED_CREDENTIALS_FILE",
                "/nonexistent/atrest/credentials",
            ),
        ]);
        let set = ProfileSet::load(&env).unwrap();
        assert!(set.active(&env).unwrap().is_none());
        assert_eq!(region(&env, &set), None);
    }
}
