//! The static-pod manifest for `atrest kms serve`: kubelet starts it from the manifests directory
//! next to kube-apiserver, on the host network, with node-critical priority, probes on the
//! plugin's `/healthz` and `/readyz`, and hostPath mounts for the socket directory, the key store
//! and every file the flags name.

use std::fmt::Write as _;
use std::net::IpAddr;

use anyhow::{bail, Context};

use super::Plan;

/// A YAML scalar: plain when that reads back as the same string, else JSON-quoted (valid YAML).
pub fn scalar(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_./:=@+,-".contains(c))
        && !s.starts_with(['@', ',', '.', ':'])
        && !s.ends_with(':')
        && !matches!(
            s.to_ascii_lowercase().as_str(),
            "true" | "false" | "yes" | "no" | "on" | "off" | "null" | "y" | "n"
        )
        && s.parse::<f64>().is_err()
        && !(s.starts_with('-')
            && !s.starts_with("--")
            && s.len() > 1
            && s[1..].parse::<f64>().is_ok())
        && s != "-";
    if plain {
        s.to_owned()
    } else {
        serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
    }
}

struct Volume {
    name: String,
    path: String,
    kind: &'static str,
    read_only: bool,
}

pub fn render(image: &str, tokens: &[String], plan: &Plan) -> anyhow::Result<String> {
    if image.trim().is_empty() {
        bail!("--image must name a container image");
    }
    let metrics = plan.metrics.context(
        "kms manifest needs --metrics-listen (e.g. 127.0.0.1:9464): kubelet's liveness and readiness probes use its /healthz and /readyz",
    )?;
    let host = match metrics.ip() {
        IpAddr::V4(v4) if v4.is_unspecified() => "127.0.0.1".to_owned(),
        IpAddr::V6(v6) if v6.is_unspecified() => "::1".to_owned(),
        ip => ip.to_string(),
    };
    let mut volumes = Vec::new();
    if let Some(dir) = plan.socket_dir() {
        volumes.push(Volume {
            name: "kms-socket".into(),
            path: dir.display().to_string(),
            kind: "DirectoryOrCreate",
            read_only: false,
        });
    }
    if let Some(store) = &plan.key_store {
        volumes.push(Volume {
            name: "key-store".into(),
            path: store.display().to_string(),
            kind: if plan.key_store_written {
                "DirectoryOrCreate"
            } else {
                "Directory"
            },
            read_only: !plan.key_store_written,
        });
    }
    for (i, f) in plan.read_files.iter().enumerate() {
        volumes.push(Volume {
            name: format!("serve-file-{i}"),
            path: f.display().to_string(),
            kind: "File",
            read_only: true,
        });
    }

    let mut y = String::new();
    y.push_str("apiVersion: v1\nkind: Pod\nmetadata:\n  labels:\n    component: atrest-kms\n    tier: control-plane\n  name: atrest-kms\n  namespace: kube-system\nspec:\n  containers:\n  - command:\n");
    for w in ["atrest", "kms", "serve"]
        .iter()
        .map(|s| s.to_string())
        .chain(tokens.iter().cloned())
    {
        let _ = writeln!(y, "    - {}", scalar(&w));
    }
    let _ = writeln!(y, "    image: {}", scalar(image));
    y.push_str("    imagePullPolicy: IfNotPresent\n");
    let probe = |path: &str, failure: u32, period: u32, initial: Option<u32>| {
        let mut p = format!(
            "      failureThreshold: {failure}\n      httpGet:\n        host: {}\n        path: {path}\n        port: {}\n        scheme: HTTP\n",
            scalar(&host),
            metrics.port()
        );
        if let Some(i) = initial {
            let _ = writeln!(p, "      initialDelaySeconds: {i}");
        }
        let _ = write!(
            p,
            "      periodSeconds: {period}\n      timeoutSeconds: 5\n"
        );
        p
    };
    y.push_str("    livenessProbe:\n");
    y.push_str(&probe("/healthz", 8, 10, Some(10)));
    y.push_str("    name: atrest-kms\n");
    y.push_str("    readinessProbe:\n");
    y.push_str(&probe("/readyz", 3, 5, None));
    y.push_str("    resources:\n      requests:\n        cpu: 50m\n        memory: 64Mi\n");
    y.push_str("    securityContext:\n      allowPrivilegeEscalation: false\n      capabilities:\n        drop:\n        - ALL\n      readOnlyRootFilesystem: true\n");
    if !volumes.is_empty() {
        y.push_str("    volumeMounts:\n");
        for v in &volumes {
            let _ = writeln!(
                y,
                "    - mountPath: {}\n      name: {}",
                scalar(&v.path),
                v.name
            );
            if v.read_only {
                y.push_str("      readOnly: true\n");
            }
        }
    }
    y.push_str(
        "  hostNetwork: true\n  priority: 2000001000\n  priorityClassName: system-node-critical\n",
    );
    y.push_str("  securityContext:\n    runAsGroup: 0\n    runAsUser: 0\n    seccompProfile:\n      type: RuntimeDefault\n");
    if !volumes.is_empty() {
        y.push_str("  volumes:\n");
        for v in &volumes {
            let _ = writeln!(
                y,
                "  - hostPath:\n      path: {}\n      type: {}\n    name: {}",
                scalar(&v.path),
                v.kind,
                v.name
            );
        }
    }
    y.push_str("status: {}\n");
    Ok(y)
}

#[cfg(test)]
mod tests {
    use super::scalar;

    #[test]
    fn scalars_read_back_as_strings() {
        for s in [
            "--listen=unix:///run/a.sock",
            "true",
            "1.5",
            "a b",
            "",
            "-",
            "@x",
            "9464",
            "--x",
            "null",
        ] {
            let doc = yaml_rust2::YamlLoader::load_from_str(&format!("v: {}", scalar(s))).unwrap();
            assert_eq!(doc[0]["v"].as_str(), Some(s), "{s} → {}", scalar(s));
        }
    }
}
