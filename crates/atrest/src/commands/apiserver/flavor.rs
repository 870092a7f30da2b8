//! `apiserver enable/disable --flavor`: the equivalent configuration for distributions that write
//! kube-apiserver's manifest (or run it in-process) themselves, so editing the manifest would be
//! undone on the next restart.

use super::edit::{CONFIG_FLAG, RELOAD_FLAG};

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    K3s,
    Rke2,
    Talos,
}

/// What the snippet wires: the config file, the directory to mount, the KMS socket directory.
pub struct Wiring<'a> {
    pub config: &'a str,
    pub config_mount: &'a str,
    pub socket_dir: Option<&'a str>,
    pub automatic_reload: bool,
}

fn flag(f: &str) -> &str {
    f.trim_start_matches('-')
}

/// The snippet; `disable`: the same lines, introduced as what to remove.
pub fn snippet(flavor: Flavor, w: &Wiring<'_>, disable: bool) -> String {
    let mut out = String::new();
    let verb = if disable {
        "Remove these lines from"
    } else {
        "Add to"
    };
    match flavor {
        Flavor::K3s | Flavor::Rke2 => {
            let (file, service, own) = match flavor {
                Flavor::K3s => (
                    "/etc/rancher/k3s/config.yaml",
                    "k3s",
                    "k3s runs kube-apiserver in its own process, so host paths need no mounts. Leave \
                     `secrets-encryption` off: with it k3s passes its own\n# --encryption-provider-config.",
                ),
                _ => (
                    "/etc/rancher/rke2/config.yaml",
                    "rke2-server",
                    "rke2 runs kube-apiserver as a static pod it writes itself; the mounts below make the \
                     files visible in it. rke2\n# otherwise uses its own encryption config \
                     (secrets-encryption), which these arguments replace.",
                ),
            };
            out.push_str(&format!(
                "# {verb} {file} on every server node, then `systemctl restart {service}` one node at a time.\n# {own}\n"
            ));
            out.push_str("kube-apiserver-arg:\n");
            out.push_str(&format!("  - {}={}\n", flag(CONFIG_FLAG), w.config));
            if w.automatic_reload {
                out.push_str(&format!("  - {}=true\n", flag(RELOAD_FLAG)));
            }
            if flavor == Flavor::Rke2 {
                out.push_str("kube-apiserver-extra-mount:\n");
                out.push_str(&format!("  - {0}:{0}:ro\n", w.config_mount));
                if let Some(s) = w.socket_dir {
                    out.push_str(&format!("  - {s}:{s}\n"));
                }
            }
        }
        Flavor::Talos => {
            out.push_str(&format!(
                "# {verb} the machine config of every control-plane node (a patch for\n\
                 # `talosctl patch machineconfig --nodes CP1,CP2,CP3 --patch @atrest.yaml`).\n\
                 # On Talos only /var is writable: put the config (machine.files, op: create, permissions: 0o600)\n\
                 # and the plugin socket under /var. These arguments replace Talos's own secretbox encryption config.\n"
            ));
            out.push_str("cluster:\n  apiServer:\n    extraArgs:\n");
            out.push_str(&format!("      {}: {}\n", flag(CONFIG_FLAG), w.config));
            if w.automatic_reload {
                out.push_str(&format!("      {}: \"true\"\n", flag(RELOAD_FLAG)));
            }
            out.push_str("    extraVolumes:\n");
            out.push_str(&format!(
                "      - hostPath: {0}\n        mountPath: {0}\n        readonly: true\n",
                w.config_mount
            ));
            if let Some(s) = w.socket_dir {
                out.push_str(&format!(
                    "      - hostPath: {s}\n        mountPath: {s}\n        readonly: false\n"
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wiring() -> Wiring<'static> {
        Wiring {
            config: "/var/lib/enc/enc.yaml",
            config_mount: "/var/lib/enc",
            socket_dir: Some("/var/run/atrest"),
            automatic_reload: true,
        }
    }

    #[test]
    fn snippets_parse_as_yaml_and_carry_the_flags() {
        for f in [Flavor::K3s, Flavor::Rke2, Flavor::Talos] {
            let s = snippet(f, &wiring(), false);
            let docs = yaml_rust2::YamlLoader::load_from_str(&s).expect("valid YAML");
            assert_eq!(docs.len(), 1, "{s}");
            assert!(s.contains("encryption-provider-config"), "{s}");
            assert!(s.contains("/var/lib/enc/enc.yaml"), "{s}");
        }
        let talos =
            &yaml_rust2::YamlLoader::load_from_str(&snippet(Flavor::Talos, &wiring(), false))
                .unwrap()[0];
        assert_eq!(
            talos["cluster"]["apiServer"]["extraArgs"]["encryption-provider-config"].as_str(),
            Some("/var/lib/enc/enc.yaml")
        );
        assert_eq!(
            talos["cluster"]["apiServer"]["extraVolumes"][1]["hostPath"].as_str(),
            Some("/var/run/atrest")
        );
        let rke2 = &yaml_rust2::YamlLoader::load_from_str(&snippet(Flavor::Rke2, &wiring(), false))
            .unwrap()[0];
        assert_eq!(
            rke2["kube-apiserver-extra-mount"][0].as_str(),
            Some("/var/lib/enc:/var/lib/enc:ro")
        );
    }
}
