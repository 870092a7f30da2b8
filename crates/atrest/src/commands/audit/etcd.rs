//! The checks that talk to etcd: TLS on every endpoint, client certificates required (probed by
//! connecting without one), and every object of every covered resource encrypted with its current
//! write key — the `atrest status` scan of atrest-store, graded.

use std::collections::BTreeMap;

use atrest_store::etcd::status::{status, NoProgress};
use atrest_store::etcd::{EtcdError, EtcdSettings};
use atrest_store::report::{ReportOptions, StatusReport};

use super::checks::Check;
use super::files::{flag_value, NodeFacts};
use super::AuditArgs;
use crate::commands::etcd_args::runtime;

/// Writes after which an aesgcm key should be rotated (upstream's advice for random nonces).
pub const AESGCM_MAX_WRITES: u64 = 200_000;

/// The connection to audit: the flags when given, else kube-apiserver's own etcd flags; `None`
/// when neither names one.
fn settings(args: &AuditArgs, node: &NodeFacts) -> Option<(EtcdSettings, String)> {
    let mut s = args.etcd.settings();
    let defaults = args.etcd.endpoints == ["127.0.0.1:2379"]
        && args.etcd.cacert.is_none()
        && args.etcd.cert.is_none()
        && args.etcd.key.is_none();
    let a = &node.apiserver_args;
    if defaults {
        if let Some(servers) = flag_value(a, "--etcd-servers") {
            s.endpoints = servers
                .split(',')
                .map(str::trim)
                .filter(|e| !e.is_empty())
                .map(str::to_owned)
                .collect();
            s.cacert = flag_value(a, "--etcd-cafile").map(Into::into);
            s.cert = flag_value(a, "--etcd-certfile").map(Into::into);
            s.key = flag_value(a, "--etcd-keyfile").map(Into::into);
        } else {
            return None;
        }
    }
    let prefix = if args.etcd.etcd_prefix != "/registry" {
        args.etcd.etcd_prefix.clone()
    } else {
        flag_value(a, "--etcd-prefix")
            .unwrap_or("/registry")
            .to_owned()
    };
    Some((s, prefix))
}

fn plain_endpoints(s: &EtcdSettings) -> Vec<String> {
    let tls = s.cacert.is_some() || s.cert.is_some();
    s.endpoints
        .iter()
        .filter(|e| e.starts_with("http://") || (!e.contains("://") && !tls))
        .cloned()
        .collect()
}

/// Whether a refused connection was refused for the missing client certificate (TLS alert).
fn refused_for_certificate(detail: &str) -> bool {
    let d = detail.to_ascii_lowercase();
    ["certificate", "alert", "handshake", "tls", "peer closed"]
        .iter()
        .any(|m| d.contains(m))
}

pub fn etcd_checks(args: &AuditArgs, node: &NodeFacts, out: &mut Vec<Check>) {
    let Some((settings, prefix)) = settings(args, node) else {
        out.push(Check::warn(
            "etcd-tls",
            "no etcd connection to check: the manifest has no --etcd-servers and no --endpoints was given",
            "give --endpoints/--cacert/--cert/--key (kube-apiserver's etcd client certificate), or --no-etcd",
        ));
        return;
    };
    let endpoints = settings.endpoints.join(",");
    let plain = plain_endpoints(&settings);
    if plain.is_empty() {
        out.push(Check::pass(
            "etcd-tls",
            format!("etcd endpoints use TLS: {endpoints}"),
        ));
    } else {
        out.push(Check::fail(
            "etcd-tls",
            format!("etcd is reached over plain http: {}", plain.join(",")),
            "serve etcd with --cert-file/--key-file/--trusted-ca-file/--client-cert-auth=true and point kube-apiserver's --etcd-servers at https://",
        ));
    }
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => {
            out.push(Check::warn(
                "etcd-client-auth",
                format!("{e:#}"),
                "run the audit again",
            ));
            return;
        }
    };
    if !plain.is_empty() {
        out.push(Check::fail(
            "etcd-client-auth",
            "plain http has no client authentication: anyone who reaches etcd can read and write every object",
            "enable TLS with --client-cert-auth=true on etcd",
        ));
    } else if settings.cacert.is_none() {
        out.push(Check::warn(
            "etcd-client-auth",
            "cannot probe client authentication without the etcd CA",
            "give --cacert (kube-apiserver's --etcd-cafile)",
        ));
    }
    // The real connection first: when it works and the same connection without the client
    // certificate does not, the certificate is what etcd insists on (TLS alerts reach the client
    // only as a generic transport error).
    let connected = rt.block_on(atrest_store::etcd::connect(&settings));
    if plain.is_empty() && settings.cacert.is_some() {
        let anonymous = EtcdSettings {
            cert: None,
            key: None,
            ..settings.clone()
        };
        let without = rt.block_on(atrest_store::etcd::connect(&anonymous));
        out.push(match (&connected, without) {
            (_, Ok(_)) => Check::fail(
                "etcd-client-auth",
                format!("etcd at {endpoints} accepts clients without a certificate"),
                "start etcd with --client-cert-auth=true --trusted-ca-file=CA (kubeadm's default)",
            ),
            (Ok(_), Err(_)) if settings.cert.is_some() => Check::pass(
                "etcd-client-auth",
                "etcd refuses clients without a certificate (and accepts kube-apiserver's)",
            ),
            (_, Err(EtcdError::Unreachable { detail, .. })) if refused_for_certificate(&detail) => {
                Check::pass("etcd-client-auth", "etcd refuses clients without a certificate")
            }
            (_, Err(e)) => Check::warn(
                "etcd-client-auth",
                format!("could not tell whether etcd requires client certificates: {e}"),
                "check that etcd runs with --client-cert-auth=true; give the client certificate (--cert/--key) so the audit can compare",
            ),
        });
    }

    let Some(config_path) = &node.config_path else {
        return;
    };
    if node.config.is_none() {
        return; // the config check already failed
    }
    let conn = match connected {
        Ok(c) => c,
        Err(e) => {
            out.push(Check::warn(
                "etcd-encrypted",
                format!("could not read etcd ({e}); an outage or wrong credentials, not a finding about the data"),
                "give --endpoints/--cacert/--cert/--key (kube-apiserver's etcd client certificate), or --no-etcd",
            ));
            return;
        }
    };
    let transformers =
        match crate::commands::common::load_transformers(config_path, &node.load_options) {
            Ok((_, t)) => t,
            Err(e) => {
                out.push(Check::warn(
                    "etcd-encrypted",
                    format!("cannot classify stored values: {e:#}"),
                    "make sure the KMS plugin the config names is running",
                ));
                return;
            }
        };
    let opts = ReportOptions {
        etcd_prefix: prefix.clone(),
        verify: false,
        list: false,
    };
    match rt.block_on(status(&conn, transformers, opts, &NoProgress)) {
        Ok((report, _)) => grade(&report, &prefix, out),
        Err(e) => out.push(Check::warn(
            "etcd-encrypted",
            format!("scanning {prefix} failed: {e}"),
            "run `atrest status` for details",
        )),
    }
}

fn by_resource(report: &StatusReport, pick: impl Fn(&atrest_store::report::Row) -> bool) -> String {
    let mut m: BTreeMap<&str, u64> = BTreeMap::new();
    for r in report.rows.iter().filter(|r| pick(r)) {
        *m.entry(&r.resource).or_default() += r.count;
    }
    m.iter()
        .map(|(r, n)| format!("{r}: {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn grade(report: &StatusReport, prefix: &str, out: &mut Vec<Check>) {
    let t = &report.totals;
    if t.unreadable > 0 {
        out.push(Check::fail(
            "etcd-encrypted",
            format!(
                "{} stored values match no configured provider or key ({})",
                t.unreadable,
                by_resource(report, |r| r.unreadable)
            ),
            "restore the key that wrote them to the config (`atrest status --list` names them)",
        ));
    }
    if t.unencrypted_covered > 0 {
        out.push(Check::fail(
            "etcd-encrypted",
            format!(
                "{} objects of covered resources are stored in plaintext ({})",
                t.unencrypted_covered,
                by_resource(report, |r| r.covered
                    && !r.unreadable
                    && r.provider == "identity"
                    && r.stale == Some(true))
            ),
            "atrest rewrite (re-encrypts them with the current write key)",
        ));
    }
    if t.stale_encrypted > 0 {
        out.push(Check::warn(
            "etcd-encrypted",
            format!(
                "{} objects are encrypted with an older provider or key ({})",
                t.stale_encrypted,
                by_resource(report, |r| r.covered
                    && !r.unreadable
                    && r.provider != "identity"
                    && r.stale == Some(true))
            ),
            "atrest rewrite, then remove the old key from the config",
        ));
    }
    if t.unreadable == 0 && t.stale == 0 {
        out.push(Check::pass(
            "etcd-encrypted",
            format!(
                "all {} objects of covered resources under {prefix} use their current write key",
                t.covered
            ),
        ));
    }
    let gcm: u64 = report
        .rows
        .iter()
        .filter(|r| r.provider == "aesgcm" && r.stale == Some(false))
        .map(|r| r.count)
        .sum();
    if gcm > AESGCM_MAX_WRITES {
        out.push(Check::warn(
            "aesgcm-key-age",
            format!("{gcm} objects are stored with the current aesgcm key: it has done more than {AESGCM_MAX_WRITES} writes"),
            "rotate the aesgcm key (new key first, restart kube-apiserver, atrest rewrite)",
        ));
    }
}
