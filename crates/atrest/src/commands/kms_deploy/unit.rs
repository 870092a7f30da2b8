//! The systemd unit for `atrest kms serve`: ordered before kubelet (which starts kube-apiserver),
//! restarted always, sandboxed so it can write only its socket directory and (with `--init`) its
//! key store, with no capabilities.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::bail;

use super::Plan;

/// One ExecStart word, quoted the way systemd splits command lines (`%` and `$` escaped too).
pub fn quote(word: &str) -> String {
    let safe = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_./:=@+,-".contains(c));
    let escaped = word.replace('%', "%%").replace('$', "$$");
    if safe {
        return escaped;
    }
    let mut out = String::from("\"");
    for c in escaped.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn under_home(p: &Path) -> bool {
    p.starts_with("/home") || p.starts_with("/root") || p.starts_with("/run/user")
}

pub fn render(binary: &Path, tokens: &[String], plan: &Plan) -> anyhow::Result<String> {
    let Some(bin) = binary.to_str().filter(|_| binary.is_absolute()) else {
        bail!(
            "--binary {} must be an absolute UTF-8 path",
            binary.display()
        );
    };
    let mut rw = Vec::new();
    let mut runtime_dir = None;
    if let Some(dir) = plan.socket_dir() {
        let rel = dir
            .strip_prefix("/run")
            .or_else(|_| dir.strip_prefix("/var/run"))
            .ok()
            .filter(|r| !r.as_os_str().is_empty());
        match rel {
            Some(r) => runtime_dir = Some(r.display().to_string()),
            None if dir == Path::new("/run") || dir == Path::new("/var/run") => {
                bail!("--listen: give the socket a directory of its own under /run (e.g. unix:///run/atrest/kms.sock)")
            }
            None => rw.push(quote(&dir.display().to_string())),
        }
    }
    let mut state_dir = None;
    if let Some(store) = &plan.key_store {
        match store
            .strip_prefix("/var/lib")
            .ok()
            .filter(|r| !r.as_os_str().is_empty())
        {
            Some(r) => state_dir = Some(r.display().to_string()),
            None if plan.key_store_written => rw.push(quote(&store.display().to_string())),
            None => {}
        }
    }
    let paths = plan
        .read_files
        .iter()
        .chain(plan.key_store.iter())
        .chain(plan.socket.iter());
    for p in paths {
        if under_home(p) {
            bail!(
                "{} is under a home directory, which the unit hides (ProtectHome=yes); keep plugin files under /etc, /var/lib or /run",
                p.display()
            );
        }
    }

    let mut exec = quote(bin);
    for w in ["kms", "serve"]
        .iter()
        .map(|s| s.to_string())
        .chain(tokens.iter().cloned())
    {
        exec.push(' ');
        exec.push_str(&quote(&w));
    }

    let mut u = String::new();
    u.push_str("[Unit]\n");
    u.push_str("Description=atrest KMS v2 plugin for Kubernetes encryption at rest\n");
    u.push_str(
        "# kube-apiserver (a static pod run by kubelet) needs the plugin socket when it starts.\n",
    );
    u.push_str("Before=kubelet.service\n");
    if plan.network {
        u.push_str("Wants=network-online.target\nAfter=network-online.target\n");
    }
    u.push_str("\n[Service]\nType=simple\n");
    let _ = writeln!(u, "ExecStart={exec}");
    u.push_str("Restart=always\nRestartSec=1s\n");
    if let Some(g) = &plan.socket_group {
        let _ = writeln!(
            u,
            "# The socket's group (--socket-group); the runtime directory is group-traversable.\nGroup={g}"
        );
    }
    if let Some(r) = &runtime_dir {
        let _ = writeln!(u, "RuntimeDirectory={r}");
        let mode = if plan.socket_group.is_some() {
            "0750"
        } else {
            "0700"
        };
        let _ = writeln!(u, "RuntimeDirectoryMode={mode}");
        u.push_str("# kube-apiserver's pod bind-mounts this directory: keep it across restarts, or the pod\n# would keep seeing the old, deleted directory.\nRuntimeDirectoryPreserve=yes\n");
    }
    if let Some(s) = &state_dir {
        let _ = writeln!(u, "StateDirectory={s}\nStateDirectoryMode=0700");
    }
    if !rw.is_empty() {
        let _ = writeln!(u, "ReadWritePaths={}", rw.join(" "));
    }
    u.push_str("UMask=0077\n");
    u.push_str("NoNewPrivileges=yes\n");
    u.push_str("ProtectSystem=strict\n");
    u.push_str("ProtectHome=yes\n");
    u.push_str("PrivateTmp=yes\n");
    if plan.pkcs11 {
        u.push_str("# PKCS#11 tokens may be devices: /dev stays visible.\n");
    } else {
        u.push_str("PrivateDevices=yes\n");
    }
    u.push_str("CapabilityBoundingSet=\nAmbientCapabilities=\n");
    u.push_str("ProtectKernelTunables=yes\nProtectKernelModules=yes\nProtectKernelLogs=yes\nProtectControlGroups=yes\nProtectClock=yes\nProtectHostname=yes\n");
    u.push_str(
        "RestrictNamespaces=yes\nRestrictRealtime=yes\nRestrictSUIDSGID=yes\nLockPersonality=yes\n",
    );
    u.push_str(
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6\nSystemCallArchitectures=native\n",
    );
    u.push_str("# Key material must not end up in core dumps.\nLimitCORE=0\n");
    u.push_str("\n[Install]\nWantedBy=multi-user.target\n");
    Ok(u)
}

#[cfg(test)]
mod tests {
    use super::quote;

    #[test]
    fn quoting() {
        assert_eq!(
            quote("--listen=unix:///run/a.sock"),
            "--listen=unix:///run/a.sock"
        );
        assert_eq!(quote("a b"), "\"a b\"");
        assert_eq!(quote("100%"), "\"100%%\"");
        assert_eq!(quote("$HOME"), "\"$$HOME\"");
        assert_eq!(quote("a\"b"), "\"a\\\"b\"");
        assert_eq!(quote(""), "\"\"");
    }
}
