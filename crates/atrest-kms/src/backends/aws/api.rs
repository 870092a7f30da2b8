//! The AWS KMS JSON API (`X-Amz-Target: TrentService.<Operation>`, `application/x-amz-json-1.1`)
//! over reqwest, SigV4-signed per request with the chain's current credentials, and its errors
//! sorted into what they mean for the plugin.

use serde_json::Value;

use super::credentials::{CredentialChain, CredentialsError};
use super::sign;

/// What a failed call means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Endpoint unreachable, timeout, 5xx, `KMSInternalException`: an outage, retry later.
    Outage,
    /// `ThrottlingException`: over the request quota.
    Throttled,
    /// `AccessDeniedException`, `UnrecognizedClientException`, expired/invalid token, no
    /// credentials: the plugin's identity or its permissions.
    Denied,
    /// `DisabledException`, `KMSInvalidStateException`: the key exists but cannot be used now.
    KeyState,
    /// `NotFoundException`, `InvalidArnException`, `ValidationException`…: the configured key
    /// (or a request) is wrong.
    Invalid,
    /// `InvalidCiphertextException`, `IncorrectKeyException`: this blob cannot be decrypted
    /// (corrupt, another key, another encryption context).
    Ciphertext,
}

/// A failed KMS call, named by operation and AWS error code.
#[derive(Debug, Clone)]
pub struct KmsError {
    pub failure: Failure,
    pub message: String,
}

impl std::fmt::Display for KmsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// A KMS endpoint in one region, with the credential chain.
pub struct KmsApi {
    http: reqwest::Client,
    /// `https://kms.REGION.amazonaws.com` or `--aws-endpoint-url`, no trailing slash.
    endpoint: String,
    region: String,
    creds: CredentialChain,
}

impl KmsApi {
    pub fn new(
        http: reqwest::Client,
        endpoint: String,
        region: String,
        creds: CredentialChain,
    ) -> KmsApi {
        KmsApi {
            http,
            endpoint,
            region,
            creds,
        }
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    pub fn region(&self) -> &str {
        &self.region
    }

    /// Calls `TrentService.<op>` with `body`; the JSON answer, or why not.
    pub async fn call(&self, op: &str, body: &Value) -> Result<Value, KmsError> {
        let creds = self.creds.credentials().await.map_err(|e| KmsError {
            failure: match e {
                CredentialsError::NotFound(_) => Failure::Denied,
                CredentialsError::Provider { .. } => Failure::Outage,
            },
            message: format!("KMS {op}: {e}"),
        })?;
        let payload = serde_json::to_vec(body).map_err(|e| KmsError {
            failure: Failure::Invalid,
            message: format!("KMS {op}: request body: {e}"),
        })?;
        let url = format!("{}/", self.endpoint);
        let target = format!("TrentService.{op}");
        let content_type = "application/x-amz-json-1.1";
        let headers = [
            ("content-type", content_type),
            ("x-amz-target", target.as_str()),
        ];
        let signed = sign::sign_request(
            &creds,
            &self.region,
            "kms",
            &sign::Request {
                method: "POST",
                url: &url,
                headers: &headers,
                body: &payload,
            },
        )
        .map_err(|e| KmsError {
            failure: Failure::Invalid,
            message: format!("KMS {op}: {e}"),
        })?;
        let mut req = self
            .http
            .post(&url)
            .header("content-type", content_type)
            .header("x-amz-target", &target);
        for (k, v) in signed {
            req = req.header(k, v);
        }
        let resp = req.body(payload).send().await.map_err(|e| KmsError {
            failure: Failure::Outage,
            message: format!("KMS {op} at {}: {}", self.endpoint, describe_transport(&e)),
        })?;
        let status = resp.status();
        let header_type = resp
            .headers()
            .get("x-amzn-errortype")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let bytes = resp.bytes().await.map_err(|e| KmsError {
            failure: Failure::Outage,
            message: format!("KMS {op}: reading the answer: {}", e.without_url()),
        })?;
        let value: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if status.is_success() {
            if value.is_object() {
                return Ok(value);
            }
            return Err(KmsError {
                failure: Failure::Outage,
                message: format!("KMS {op}: HTTP {status} but the answer is not JSON"),
            });
        }
        let code = value["__type"]
            .as_str()
            .map(str::to_string)
            .or(header_type)
            .unwrap_or_default();
        // `com.amazonaws.kms#NotFoundException` or `NotFoundException:http://…`.
        let code = code
            .rsplit('#')
            .next()
            .unwrap_or("")
            .split(':')
            .next()
            .unwrap_or("")
            .to_string();
        let message = value["message"]
            .as_str()
            .or_else(|| value["Message"].as_str())
            .unwrap_or("")
            .to_string();
        Err(KmsError {
            failure: classify(status.as_u16(), &code),
            message: format!(
                "KMS {op}: {}{}{}",
                if code.is_empty() {
                    format!("HTTP {status}")
                } else {
                    code
                },
                if message.is_empty() { "" } else { ": " },
                message
            ),
        })
    }
}

fn classify(status: u16, code: &str) -> Failure {
    match code {
        "ThrottlingException" | "LimitExceededException" | "TooManyRequestsException" => {
            Failure::Throttled
        }
        "AccessDeniedException"
        | "UnrecognizedClientException"
        | "InvalidSignatureException"
        | "IncompleteSignature"
        | "ExpiredTokenException"
        | "InvalidClientTokenId"
        | "MissingAuthenticationToken" => Failure::Denied,
        "DisabledException" | "KMSInvalidStateException" | "KeyUnavailableException" => {
            Failure::KeyState
        }
        "InvalidCiphertextException" | "IncorrectKeyException" => Failure::Ciphertext,
        "KMSInternalException" | "DependencyTimeoutException" | "ServiceUnavailable" => {
            Failure::Outage
        }
        _ if status >= 500 || status == 429 => Failure::Outage,
        _ if status == 403 => Failure::Denied,
        _ => Failure::Invalid,
    }
}

/// Transport errors without the URL (the endpoint is printed once, by the caller) but with the
/// cause chain (connection refused, DNS, TLS…).
fn describe_transport(e: &reqwest::Error) -> String {
    let mut out = if e.is_timeout() {
        "timed out".to_string()
    } else if e.is_connect() {
        "cannot connect".to_string()
    } else {
        "request failed".to_string()
    };
    let mut src = std::error::Error::source(e);
    let mut last = String::new();
    while let Some(s) = src {
        let text = s.to_string();
        if text != last && !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        last = text;
        src = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_sorted() {
        assert_eq!(classify(400, "ThrottlingException"), Failure::Throttled);
        assert_eq!(classify(400, "AccessDeniedException"), Failure::Denied);
        assert_eq!(classify(400, "DisabledException"), Failure::KeyState);
        assert_eq!(classify(400, "KMSInvalidStateException"), Failure::KeyState);
        assert_eq!(classify(400, "IncorrectKeyException"), Failure::Ciphertext);
        assert_eq!(classify(400, "NotFoundException"), Failure::Invalid);
        assert_eq!(classify(503, ""), Failure::Outage);
        assert_eq!(classify(500, "KMSInternalException"), Failure::Outage);
    }
}
