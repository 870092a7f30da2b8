//! The standard AWS credential chain, in the SDKs' order, cached until five minutes before the
//! credentials expire:
//!
//! 1. environment: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`;
//! 2. the active profile of the shared files ([`super::profile`]): static keys,
//!    `credential_process`, `role_arn` with `web_identity_token_file`, `source_profile` or
//!    `credential_source` (STS `AssumeRole[WithWebIdentity]`);
//! 3. web identity (IRSA): `AWS_WEB_IDENTITY_TOKEN_FILE` + `AWS_ROLE_ARN`
//!    (+ `AWS_ROLE_SESSION_NAME`), STS `AssumeRoleWithWebIdentity`;
//! 4. ECS / EKS Pod Identity container credentials: `AWS_CONTAINER_CREDENTIALS_RELATIVE_URI`, or
//!    `AWS_CONTAINER_CREDENTIALS_FULL_URI` with `AWS_CONTAINER_AUTHORIZATION_TOKEN[_FILE]`;
//! 5. EC2 instance metadata, IMDSv2 only (session token first), unless
//!    `AWS_EC2_METADATA_DISABLED=true`; `AWS_EC2_METADATA_SERVICE_ENDPOINT` overrides the address.
//!
//! STS is called at `AWS_ENDPOINT_URL_STS`, else `AWS_ENDPOINT_URL`, else the regional endpoint.
//! SSO profiles are not supported (use `credential_process` with
//! `aws configure export-credentials --format process`). Secrets are held in [`Zeroizing`]
//! buffers and never logged.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use zeroize::Zeroizing;

use super::profile::{Env, Profile, ProfileSet};
use super::sign;

/// Refresh this long before expiry (STS sessions last ≥ 15 min, instance credentials ~6 h).
const REFRESH_BEFORE: Duration = Duration::from_secs(300);
/// `source_profile` hops allowed (loops end here).
const MAX_PROFILE_DEPTH: usize = 5;

/// One set of AWS credentials.
#[derive(Clone)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: Zeroizing<String>,
    pub session_token: Option<Zeroizing<String>>,
    pub expiry: Option<SystemTime>,
    /// Which provider gave them (for logs): `environment`, `profile ops`, `web identity`, …
    pub from: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("from", &self.from)
            .field("expiry", &self.expiry)
            .finish_non_exhaustive()
    }
}

impl Credentials {
    fn fresh(&self) -> bool {
        match self.expiry {
            None => true,
            Some(t) => t > SystemTime::now() + REFRESH_BEFORE,
        }
    }

    fn usable(&self) -> bool {
        self.expiry.is_none_or(|t| t > SystemTime::now())
    }
}

/// Why no credentials could be had.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CredentialsError {
    /// No provider of the chain applies: a configuration problem.
    #[error("no AWS credentials found; tried {0}")]
    NotFound(String),
    /// A provider applies but failed (STS refused the token, metadata unreachable, bad file…).
    #[error("AWS credentials from {from}: {reason}")]
    Provider { from: String, reason: String },
}

fn provider(from: impl Into<String>) -> impl FnOnce(String) -> CredentialsError {
    let from = from.into();
    move |reason| CredentialsError::Provider { from, reason }
}

/// The chain, with its cache.
pub struct CredentialChain {
    env: Env,
    profiles: ProfileSet,
    region: String,
    sts_endpoint: String,
    http: reqwest::Client,
    metadata: reqwest::Client,
    cache: tokio::sync::Mutex<Option<Credentials>>,
}

impl CredentialChain {
    /// `http` is used for STS; instance/container metadata get their own short-timeout client.
    pub fn new(
        env: Env,
        profiles: ProfileSet,
        region: String,
        http: reqwest::Client,
    ) -> CredentialChain {
        let sts_endpoint = env
            .get("AWS_ENDPOINT_URL_STS")
            .or_else(|| env.get("AWS_ENDPOINT_URL"))
            .map(|e| e.trim_end_matches('/').to_string())
            .unwrap_or_else(|| format!("https://sts.{region}.{}", dns_suffix(&region)));
        CredentialChain {
            env,
            profiles,
            region,
            sts_endpoint,
            http,
            metadata: metadata_client(),
            cache: tokio::sync::Mutex::new(None),
        }
    }

    /// Current credentials: the cached ones while fresh, else the chain again. If refreshing
    /// fails while the cached ones are still valid, those are used (and the failure logged).
    pub async fn credentials(&self) -> Result<Credentials, CredentialsError> {
        let mut cache = self.cache.lock().await;
        if let Some(c) = cache.as_ref().filter(|c| c.fresh()) {
            return Ok(c.clone());
        }
        match self.resolve().await {
            Ok(c) => {
                if cache.as_ref().map(|o| &o.from) != Some(&c.from) {
                    tracing::info!(from = %c.from, access_key_id = %c.access_key_id, "AWS credentials loaded");
                }
                *cache = Some(c.clone());
                Ok(c)
            }
            Err(e) => match cache.as_ref().filter(|c| c.usable()) {
                Some(old) => {
                    tracing::warn!(error = %e, "refreshing AWS credentials failed; using the current ones until they expire");
                    Ok(old.clone())
                }
                None => Err(e),
            },
        }
    }

    async fn resolve(&self) -> Result<Credentials, CredentialsError> {
        let mut tried: Vec<String> = Vec::new();
        if let Some(c) = from_env(&self.env)? {
            return Ok(c);
        }
        tried.push("environment (AWS_ACCESS_KEY_ID)".into());
        match self.profiles.active(&self.env) {
            Err(e) => return Err(provider("shared config")(e.to_string())),
            Ok(Some((name, p))) => {
                if let Some(c) = self.profile_credentials(name, p, 0).await? {
                    return Ok(c);
                }
                tried.push(format!("profile {name:?} (no credentials in it)"));
            }
            Ok(None) => tried.push(format!(
                "profile \"default\" (not in {})",
                self.profiles.describe()
            )),
        }
        if let (Some(file), Some(role)) = (
            self.env.get("AWS_WEB_IDENTITY_TOKEN_FILE"),
            self.env.get("AWS_ROLE_ARN"),
        ) {
            let session = self.env.get("AWS_ROLE_SESSION_NAME");
            return self.web_identity(role, session, file, "web identity").await;
        }
        tried.push("web identity (AWS_WEB_IDENTITY_TOKEN_FILE + AWS_ROLE_ARN)".into());
        if self.ecs_configured() {
            return self.ecs().await;
        }
        tried.push("container credentials (AWS_CONTAINER_CREDENTIALS_*)".into());
        if self.imds_disabled() {
            tried.push("EC2 instance metadata (AWS_EC2_METADATA_DISABLED)".into());
        } else {
            match self.imds().await {
                Ok(c) => return Ok(c),
                Err(e) => tried.push(format!("EC2 instance metadata ({e})")),
            }
        }
        Err(CredentialsError::NotFound(tried.join(", ")))
    }

    fn profile_credentials<'a>(
        &'a self,
        name: &'a str,
        p: &'a Profile,
        depth: usize,
    ) -> std::pin::Pin<
        Box<
            dyn std::future::Future<Output = Result<Option<Credentials>, CredentialsError>>
                + Send
                + 'a,
        >,
    > {
        Box::pin(async move {
            let from = format!("profile {name:?}");
            if depth >= MAX_PROFILE_DEPTH {
                return Err(provider(from)(
                    "source_profile chain is too long (a loop?)".into(),
                ));
            }
            if let Some(role) = p.get("role_arn") {
                let session = p.get("role_session_name").map(String::as_str);
                if let Some(file) = p.get("web_identity_token_file") {
                    return self
                        .web_identity(role, session, file, &from)
                        .await
                        .map(Some);
                }
                let source = if let Some(sp) = p.get("source_profile") {
                    if sp == name {
                        static_keys(p, &from)?
                    } else {
                        let sprof = self.profiles.get(sp).ok_or_else(|| {
                            provider(from.clone())(format!("source_profile {sp:?} does not exist"))
                        })?;
                        self.profile_credentials(sp, sprof, depth + 1).await?
                    }
                    .ok_or_else(|| {
                        provider(from.clone())(format!("source_profile {sp:?} has no credentials"))
                    })?
                } else if let Some(cs) = p.get("credential_source") {
                    match cs.as_str() {
                        "Environment" => from_env(&self.env)?.ok_or_else(|| {
                            provider(from.clone())(
                                "credential_source = Environment but AWS_ACCESS_KEY_ID is not set"
                                    .into(),
                            )
                        })?,
                        "Ec2InstanceMetadata" => self.imds().await.map_err(provider(from.clone()))?,
                        "EcsContainer" => self.ecs().await?,
                        other => {
                            return Err(provider(from)(format!(
                                "unknown credential_source {other:?} (Environment, Ec2InstanceMetadata or EcsContainer)"
                            )))
                        }
                    }
                } else {
                    return Err(provider(from)(
                        "role_arn needs web_identity_token_file, source_profile or credential_source"
                            .into(),
                    ));
                };
                return self
                    .assume_role(&source, role, session, p.get("external_id"), &from)
                    .await
                    .map(Some);
            }
            if let Some(c) = static_keys(p, &from)? {
                return Ok(Some(c));
            }
            if let Some(cmd) = p.get("credential_process") {
                return credential_process(cmd, &from).await.map(Some);
            }
            if p.contains_key("sso_start_url") || p.contains_key("sso_session") {
                return Err(provider(from)(
                    "SSO profiles are not supported; use credential_process = aws configure export-credentials --profile NAME --format process".into(),
                ));
            }
            Ok(None)
        })
    }

    /// One STS Query API call; returns the XML answer.
    async fn sts(
        &self,
        params: &[(&str, &str)],
        signed_by: Option<&Credentials>,
    ) -> Result<String, String> {
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(params.iter().chain(&[("Version", "2011-06-15")]))
            .finish();
        let url = format!("{}/", self.sts_endpoint);
        let content_type = "application/x-www-form-urlencoded; charset=utf-8";
        let mut req = self
            .http
            .post(&url)
            .header("content-type", content_type)
            .body(body.clone());
        if let Some(creds) = signed_by {
            let headers = [("content-type", content_type)];
            let signed = sign::sign_request(
                creds,
                &self.region,
                "sts",
                &sign::Request {
                    method: "POST",
                    url: &url,
                    headers: &headers,
                    body: body.as_bytes(),
                },
            )?;
            for (k, v) in signed {
                req = req.header(k, v);
            }
        }
        let resp = req
            .send()
            .await
            .map_err(|e| format!("STS {}: {}", self.sts_endpoint, e.without_url()))?;
        let status = resp.status();
        let text = resp
            .text()
            .await
            .map_err(|e| format!("STS answer: {}", e.without_url()))?;
        if !status.is_success() {
            let code = xml_tag(&text, "Code").unwrap_or_default();
            let msg = xml_tag(&text, "Message").unwrap_or_default();
            return Err(format!("STS HTTP {status}: {code}: {msg}"));
        }
        Ok(text)
    }

    async fn web_identity(
        &self,
        role: &str,
        session: Option<&str>,
        token_file: &str,
        from: &str,
    ) -> Result<Credentials, CredentialsError> {
        let err = |r: String| provider(from)(r);
        let token = Zeroizing::new(
            std::fs::read_to_string(token_file)
                .map_err(|e| err(format!("web identity token file {token_file}: {e}")))?,
        );
        let session = session.map(str::to_string).unwrap_or_else(session_name);
        let xml = self
            .sts(
                &[
                    ("Action", "AssumeRoleWithWebIdentity"),
                    ("RoleArn", role),
                    ("RoleSessionName", &session),
                    ("WebIdentityToken", token.trim()),
                ],
                None,
            )
            .await
            .map_err(err)?;
        sts_credentials(&xml, &format!("{from} ({role})")).map_err(provider(from))
    }

    async fn assume_role(
        &self,
        source: &Credentials,
        role: &str,
        session: Option<&str>,
        external_id: Option<&String>,
        from: &str,
    ) -> Result<Credentials, CredentialsError> {
        let session = session.map(str::to_string).unwrap_or_else(session_name);
        let mut params = vec![
            ("Action", "AssumeRole"),
            ("RoleArn", role),
            ("RoleSessionName", session.as_str()),
        ];
        if let Some(x) = external_id {
            params.push(("ExternalId", x));
        }
        let xml = self
            .sts(&params, Some(source))
            .await
            .map_err(provider(from))?;
        sts_credentials(&xml, &format!("{from} ({role})")).map_err(provider(from))
    }

    fn ecs_configured(&self) -> bool {
        self.env
            .get("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")
            .is_some()
            || self.env.get("AWS_CONTAINER_CREDENTIALS_FULL_URI").is_some()
    }

    async fn ecs(&self) -> Result<Credentials, CredentialsError> {
        let from = "container credentials";
        let err = provider(from);
        let url = if let Some(rel) = self.env.get("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI") {
            format!("http://169.254.170.2{rel}")
        } else if let Some(full) = self.env.get("AWS_CONTAINER_CREDENTIALS_FULL_URI") {
            check_container_uri(full).map_err(provider(from))?;
            full.to_string()
        } else {
            return Err(err("AWS_CONTAINER_CREDENTIALS_* not set".into()));
        };
        let mut req = self.metadata.get(&url);
        let token = match (
            self.env.get("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"),
            self.env.get("AWS_CONTAINER_AUTHORIZATION_TOKEN"),
        ) {
            (Some(f), _) => Some(Zeroizing::new(
                std::fs::read_to_string(f)
                    .map_err(|e| provider(from)(format!("authorization token file {f}: {e}")))?
                    .trim()
                    .to_string(),
            )),
            (None, Some(t)) => Some(Zeroizing::new(t.to_string())),
            _ => None,
        };
        if let Some(t) = &token {
            req = req.header("authorization", t.as_str());
        }
        let v = get_json(req).await.map_err(provider(from))?;
        json_credentials(&v, "Token", from).map_err(provider(from))
    }

    fn imds_disabled(&self) -> bool {
        self.env
            .get("AWS_EC2_METADATA_DISABLED")
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
    }

    async fn imds(&self) -> Result<Credentials, String> {
        let base = imds_base(&self.env);
        let token = imds_token(&self.metadata, &base).await?;
        let list = format!("{base}/latest/meta-data/iam/security-credentials/");
        let role = imds_get(&self.metadata, &list, &token).await?;
        let role = role.lines().next().unwrap_or("").trim().to_string();
        if role.is_empty() {
            return Err("no IAM role attached to this instance".into());
        }
        let body =
            Zeroizing::new(imds_get(&self.metadata, &format!("{list}{role}"), &token).await?);
        let v: Value = serde_json::from_str(&body)
            .map_err(|_| "instance credentials: not JSON".to_string())?;
        if let Some(code) = v["Code"].as_str().filter(|c| *c != "Success") {
            return Err(format!("instance credentials: {code}"));
        }
        json_credentials(&v, "Token", &format!("EC2 instance metadata (role {role})"))
    }
}

/// The region from EC2 instance metadata (IMDSv2), if this is an instance and it is allowed.
pub async fn imds_region(env: &Env) -> Result<String, String> {
    if env
        .get("AWS_EC2_METADATA_DISABLED")
        .is_some_and(|v| v.eq_ignore_ascii_case("true"))
    {
        return Err("EC2 instance metadata is disabled (AWS_EC2_METADATA_DISABLED)".into());
    }
    let client = metadata_client();
    let base = imds_base(env);
    let token = imds_token(&client, &base).await?;
    let r = imds_get(
        &client,
        &format!("{base}/latest/meta-data/placement/region"),
        &token,
    )
    .await?;
    Ok(r.trim().to_string())
}

/// `amazonaws.com`, or the China partition's suffix.
pub fn dns_suffix(region: &str) -> &'static str {
    if region.starts_with("cn-") {
        "amazonaws.com.cn"
    } else {
        "amazonaws.com"
    }
}

fn metadata_client() -> reqwest::Client {
    // Link-local metadata must never go through a proxy; 1 s as in the SDKs, so a host that is not
    // an instance fails fast.
    reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(Duration::from_secs(1))
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap_or_default()
}

fn imds_base(env: &Env) -> String {
    env.get("AWS_EC2_METADATA_SERVICE_ENDPOINT")
        .unwrap_or("http://169.254.169.254")
        .trim_end_matches('/')
        .to_string()
}

async fn imds_token(client: &reqwest::Client, base: &str) -> Result<Zeroizing<String>, String> {
    let resp = client
        .put(format!("{base}/latest/api/token"))
        .header("x-aws-ec2-metadata-token-ttl-seconds", "21600")
        .send()
        .await
        .map_err(|e| format!("{base}: {}", e.without_url()))?;
    if !resp.status().is_success() {
        return Err(format!("IMDSv2 token: HTTP {}", resp.status()));
    }
    resp.text()
        .await
        .map(Zeroizing::new)
        .map_err(|e| format!("IMDSv2 token: {}", e.without_url()))
}

async fn imds_get(client: &reqwest::Client, url: &str, token: &str) -> Result<String, String> {
    let resp = client
        .get(url)
        .header("x-aws-ec2-metadata-token", token)
        .send()
        .await
        .map_err(|e| format!("instance metadata: {}", e.without_url()))?;
    if !resp.status().is_success() {
        return Err(format!("instance metadata: HTTP {}", resp.status()));
    }
    resp.text()
        .await
        .map_err(|e| format!("instance metadata: {}", e.without_url()))
}

async fn get_json(req: reqwest::RequestBuilder) -> Result<Value, String> {
    let resp = req.send().await.map_err(|e| e.without_url().to_string())?;
    let status = resp.status();
    let body = Zeroizing::new(resp.text().await.map_err(|e| e.without_url().to_string())?);
    if !status.is_success() {
        return Err(format!("HTTP {status}"));
    }
    serde_json::from_str(&body).map_err(|_| "answer is not JSON".into())
}

/// A full container-credentials URI may be HTTPS anywhere, plain HTTP only to loopback or the
/// ECS / EKS Pod Identity link-local agents (as the SDKs allow).
fn check_container_uri(uri: &str) -> Result<(), String> {
    let url = reqwest::Url::parse(uri)
        .map_err(|e| format!("AWS_CONTAINER_CREDENTIALS_FULL_URI {uri:?}: {e}"))?;
    match url.scheme() {
        "https" => Ok(()),
        "http" => {
            let host = url.host_str().unwrap_or("");
            let ok = match host.trim_matches(['[', ']']).parse::<std::net::IpAddr>() {
                Ok(std::net::IpAddr::V4(ip)) => {
                    ip.is_loopback()
                        || ip == std::net::Ipv4Addr::new(169, 254, 170, 2)
                        || ip == std::net::Ipv4Addr::new(169, 254, 170, 23)
                }
                Ok(std::net::IpAddr::V6(ip)) => {
                    ip.is_loopback()
                        || ip == std::net::Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x23)
                }
                Err(_) => host == "localhost",
            };
            if ok {
                Ok(())
            } else {
                Err(format!(
                    "AWS_CONTAINER_CREDENTIALS_FULL_URI {uri:?}: plain http is only allowed to loopback or the container agent"
                ))
            }
        }
        s => Err(format!(
            "AWS_CONTAINER_CREDENTIALS_FULL_URI {uri:?}: unsupported scheme {s}"
        )),
    }
}

fn from_env(env: &Env) -> Result<Option<Credentials>, CredentialsError> {
    match (
        env.get("AWS_ACCESS_KEY_ID"),
        env.get("AWS_SECRET_ACCESS_KEY"),
    ) {
        (Some(id), Some(secret)) => Ok(Some(Credentials {
            access_key_id: id.to_string(),
            secret_access_key: Zeroizing::new(secret.to_string()),
            session_token: env
                .get("AWS_SESSION_TOKEN")
                .map(|t| Zeroizing::new(t.to_string())),
            expiry: None,
            from: "environment".into(),
        })),
        (Some(_), None) => Err(provider("environment")(
            "AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not".into(),
        )),
        (None, Some(_)) => Err(provider("environment")(
            "AWS_SECRET_ACCESS_KEY is set but AWS_ACCESS_KEY_ID is not".into(),
        )),
        (None, None) => Ok(None),
    }
}

fn static_keys(p: &Profile, from: &str) -> Result<Option<Credentials>, CredentialsError> {
    match (p.get("aws_access_key_id"), p.get("aws_secret_access_key")) {
        (Some(id), Some(secret)) => Ok(Some(Credentials {
            access_key_id: id.clone(),
            secret_access_key: Zeroizing::new(secret.clone()),
            session_token: p
                .get("aws_session_token")
                .map(|t| Zeroizing::new(t.clone())),
            expiry: None,
            from: from.to_string(),
        })),
        (Some(_), None) => Err(provider(from)(
            "aws_access_key_id without aws_secret_access_key".into(),
        )),
        _ => Ok(None),
    }
}

/// Runs `credential_process` through `sh -c` (as the SDKs do) and reads its JSON.
async fn credential_process(cmd: &str, from: &str) -> Result<Credentials, CredentialsError> {
    let from_p = format!("{from} credential_process");
    let cmd = cmd.to_string();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("sh")
            .arg("-c")
            .arg(&cmd)
            .stdin(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .output()
    })
    .await
    .map_err(|e| provider(from_p.clone())(e.to_string()))?
    .map_err(|e| provider(from_p.clone())(format!("cannot run: {e}")))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(provider(from_p)(format!(
            "exited with {}: {}",
            out.status,
            err.trim()
        )));
    }
    let stdout = Zeroizing::new(out.stdout);
    let v: Value = serde_json::from_slice(&stdout)
        .map_err(|_| provider(from_p.clone())("output is not JSON".into()))?;
    if v["Version"].as_u64() != Some(1) {
        return Err(provider(from_p)("output must have \"Version\": 1".into()));
    }
    json_credentials(&v, "SessionToken", &from_p).map_err(provider(from_p))
}

/// Credentials from the JSON the container/instance endpoints and credential_process return.
fn json_credentials(v: &Value, token_field: &str, from: &str) -> Result<Credentials, String> {
    let id = v["AccessKeyId"].as_str().filter(|s| !s.is_empty());
    let secret = v["SecretAccessKey"].as_str().filter(|s| !s.is_empty());
    let (Some(id), Some(secret)) = (id, secret) else {
        return Err("answer has no AccessKeyId/SecretAccessKey".into());
    };
    let expiry = match v["Expiration"].as_str() {
        Some(s) => Some(parse_time(s)?),
        None => None,
    };
    Ok(Credentials {
        access_key_id: id.to_string(),
        secret_access_key: Zeroizing::new(secret.to_string()),
        session_token: v[token_field]
            .as_str()
            .filter(|s| !s.is_empty())
            .map(|t| Zeroizing::new(t.to_string())),
        expiry,
        from: from.to_string(),
    })
}

/// Credentials from an STS `AssumeRole*` XML answer.
fn sts_credentials(xml: &str, from: &str) -> Result<Credentials, String> {
    let get = |t: &str| xml_tag(xml, t).ok_or_else(|| format!("STS answer has no <{t}>"));
    let expiry = parse_time(&get("Expiration")?)?;
    Ok(Credentials {
        access_key_id: get("AccessKeyId")?,
        secret_access_key: Zeroizing::new(get("SecretAccessKey")?),
        session_token: Some(Zeroizing::new(get("SessionToken")?)),
        expiry: Some(expiry),
        from: from.to_string(),
    })
}

/// The text of the first `<tag>…</tag>` (STS answers are flat enough for this; the values are
/// base64/ids/timestamps, unescaped here in case).
fn xml_tag(xml: &str, tag: &str) -> Option<String> {
    let open = format!("<{tag}>");
    let start = xml.find(&open)? + open.len();
    let end = start + xml[start..].find(&format!("</{tag}>"))?;
    Some(
        xml[start..end]
            .trim()
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&quot;", "\"")
            .replace("&apos;", "'")
            .replace("&amp;", "&"),
    )
}

fn parse_time(s: &str) -> Result<SystemTime, String> {
    use aws_smithy_types::date_time::{DateTime, Format};
    let dt = DateTime::from_str(s, Format::DateTime)
        .map_err(|e| format!("bad Expiration {s:?}: {e}"))?;
    SystemTime::try_from(dt).map_err(|e| format!("bad Expiration {s:?}: {e}"))
}

fn session_name() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    format!("atrest-kms-{secs}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(env: Env) -> CredentialChain {
        let profiles = ProfileSet::load(&env).unwrap();
        CredentialChain::new(env, profiles, "eu-west-1".into(), reqwest::Client::new())
    }

    #[tokio::test]
    async fn environment_first() {
        let c = chain(Env::from_pairs([
            ("AWS_ACCESS_KEY_ID", "AKIAENV"),
            ("AWS_SECRET_ACCESS_KEY", "secret"),
            ("AWS_SESSION_TOKEN", "tok"),
            ("AWS_CONFIG_FILE", "/nonexistent/c"),
            ("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/k"),
        ]));
        let got = c.credentials().await.unwrap();
        assert_eq!(got.access_key_id, "AKIAENV");
        assert_eq!(
            got.session_token.as_deref().map(String::as_str),
            Some("tok")
        );
        assert_eq!(got.from, "environment");
        assert!(
            !format!("{got:?}").contains("secret"),
            "Debug hides secrets"
        );
    }

    #[tokio::test]
    async fn half_set_environment_is_an_error() {
        let c = chain(Env::from_pairs([("AWS_ACCESS_KEY_ID", "AKIAENV")]));
        let e = c.credentials().await.unwrap_err().to_string();
        assert!(e.contains("AWS_SECRET_ACCESS_KEY"), "{e}");
    }

    #[tokio::test]
    async fn profile_static_and_credential_process() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config");
        std::fs::write(
            &config,
            "[profile proc]\ncredential_process = printf '{\"Version\": 1, \"AccessKeyId\": \"AKIAPROC\", \"SecretAccessKey\": \"s\", \"SessionToken\": \"t\", \"Expiration\": \"2999-01-01T00:00:00Z\"}'\n[profile bad]\ncredential_process = exit 3\n",
        )
        .unwrap();
        let creds = dir.path().join("credentials");
        std::fs::write(
            &creds,
            "[st]\naws_access_key_id = AKIAST\naws_secret_access_key = x\n",
        )
        .unwrap();
        let base = [
            ("AWS_CONFIG_FILE", config.to_str().unwrap()),
            ("AWS_SHARED_CREDENTIALS_FILE", creds.to_str().unwrap()),
            ("AWS_EC2_METADATA_DISABLED", "true"),
        ];
        let with = |p: &'static str| {
            let mut pairs = base.to_vec();
            pairs.push(("AWS_PROFILE", p));
            chain(Env::from_pairs(pairs))
        };
        let st = with("st").credentials().await.unwrap();
        assert_eq!(
            (st.access_key_id.as_str(), st.from.as_str()),
            ("AKIAST", "profile \"st\"")
        );
        let pr = with("proc").credentials().await.unwrap();
        assert_eq!(pr.access_key_id, "AKIAPROC");
        assert!(pr.expiry.is_some());
        let bad = with("bad").credentials().await.unwrap_err().to_string();
        assert!(
            bad.contains("credential_process") && bad.contains("exit"),
            "{bad}"
        );
        let none = chain(Env::from_pairs(base))
            .credentials()
            .await
            .unwrap_err();
        assert!(matches!(none, CredentialsError::NotFound(_)), "{none}");
        assert!(none.to_string().contains("web identity"), "{none}");
    }

    #[test]
    fn sts_xml_and_container_uris() {
        let xml = "<AssumeRoleWithWebIdentityResponse><AssumeRoleWithWebIdentityResult><Credentials><AccessKeyId>ASIA1</AccessKeyId><SecretAccessKey>sec</SecretAccessKey><SessionToken>a+b/c=&amp;</SessionToken><Expiration>2030-01-02T03:04:05.123Z</Expiration></Credentials></AssumeRoleWithWebIdentityResult></AssumeRoleWithWebIdentityResponse>";
        let c = sts_credentials(xml, "web identity").unwrap();
        assert_eq!(c.access_key_id, "ASIA1");
        assert_eq!(
            c.session_token.as_deref().map(String::as_str),
            Some("a+b/c=&")
        );
        assert!(c.expiry.unwrap() > SystemTime::now());
        assert!(sts_credentials("<x/>", "w").is_err());
        assert!(check_container_uri("http://127.0.0.1:8080/creds").is_ok());
        assert!(check_container_uri("http://169.254.170.23/v1/credentials").is_ok());
        assert!(check_container_uri("https://creds.example/x").is_ok());
        assert!(check_container_uri("http://creds.example/x").is_err());
    }
}
