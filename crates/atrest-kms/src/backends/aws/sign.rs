//! SigV4 request signing with AWS's own `aws-sigv4` crate (no hand-written crypto): takes the
//! method, URL, the headers to sign and the body, returns the headers to add
//! (`authorization`, `x-amz-date`, `x-amz-security-token`).

use std::time::SystemTime;

use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;

use super::credentials::Credentials;

/// What a request needs to be signed.
pub(crate) struct Request<'a> {
    pub method: &'a str,
    /// Absolute URL with a host (checked when the endpoint is configured).
    pub url: &'a str,
    pub headers: &'a [(&'a str, &'a str)],
    pub body: &'a [u8],
}

/// Signs `req` for `service` in `region` now; returns the headers to add.
pub(crate) fn sign_request(
    creds: &Credentials,
    region: &str,
    service: &str,
    req: &Request<'_>,
) -> Result<Vec<(String, String)>, String> {
    let identity = aws_credential_types::Credentials::new(
        creds.access_key_id.clone(),
        creds.secret_access_key.to_string(),
        creds.session_token.as_ref().map(|t| t.to_string()),
        creds.expiry,
        "atrest",
    )
    .into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(service)
        .time(SystemTime::now())
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| format!("SigV4 parameters: {e}"))?
        .into();
    let signable = SignableRequest::new(
        req.method,
        req.url,
        req.headers.iter().copied(),
        SignableBody::Bytes(req.body),
    )
    .map_err(|e| format!("SigV4 request: {e}"))?;
    let (instructions, _signature) = sign(signable, &params)
        .map_err(|e| format!("SigV4 signing: {e}"))?
        .into_parts();
    Ok(instructions
        .headers()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect())
}
