//! `atrest apiserver enable/disable` on kubeadm-generated kube-apiserver manifests of several
//! Kubernetes versions (testdata/kubeadm): exactly the flag, volumes and mounts are added, every
//! other line stays, a second run changes nothing, disable restores the file byte for byte, no file
//! is left in the manifests directory, `--dry-run` and bad input change nothing.

mod cli_common;
use cli_common::atrest;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `/etc/kubernetes`-like tree in a temp dir: manifests/kube-apiserver.yaml (0600), enc/enc.yaml.
struct Node {
    _dir: tempfile::TempDir,
    root: PathBuf,
}

/// A Secrets-only aesgcm config (testdata/kubeadm/enc-aesgcm.yaml).
const ENC: &str = include_str!("../../../testdata/kubeadm/enc-aesgcm.yaml");

impl Node {
    fn new(manifest: &str) -> Node {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("etc/kubernetes");
        std::fs::create_dir_all(root.join("manifests")).unwrap();
        std::fs::create_dir_all(root.join("enc")).unwrap();
        let m = root.join("manifests/kube-apiserver.yaml");
        std::fs::write(&m, manifest).unwrap();
        std::fs::set_permissions(&m, std::fs::Permissions::from_mode(0o600)).unwrap();
        let enc = root.join("enc/enc.yaml");
        std::fs::write(&enc, ENC).unwrap();
        std::fs::set_permissions(&enc, std::fs::Permissions::from_mode(0o600)).unwrap();
        Node { _dir: dir, root }
    }
    fn manifest(&self) -> PathBuf {
        self.root.join("manifests/kube-apiserver.yaml")
    }
    fn manifest_arg(&self) -> String {
        self.manifest().display().to_string()
    }
    fn enc(&self) -> String {
        self.root.join("enc/enc.yaml").display().to_string()
    }
    fn backups(&self) -> PathBuf {
        self.root.parent().unwrap().join("var/lib/atrest/backups")
    }
    fn read(&self) -> String {
        std::fs::read_to_string(self.manifest()).unwrap()
    }
    /// Files in the manifests directory and in its parent (where the temp file is written).
    fn stray_files(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (dir, allowed) in [
            (self.root.join("manifests"), vec!["kube-apiserver.yaml"]),
            (self.root.clone(), vec!["manifests", "enc"]),
        ] {
            for e in std::fs::read_dir(dir).unwrap() {
                let name = e.unwrap().file_name().to_string_lossy().into_owned();
                if !allowed.contains(&name.as_str()) {
                    out.push(name);
                }
            }
        }
        out
    }
    fn enable(&self, extra: &[&str]) -> Output {
        let backups = self.backups().display().to_string();
        let manifest = self.manifest_arg();
        let enc = self.enc();
        let mut args = vec![
            "apiserver",
            "enable",
            "--manifest",
            &manifest,
            "--config",
            &enc,
            "--backup-dir",
            &backups,
        ];
        args.extend_from_slice(extra);
        atrest(&args)
    }
    fn disable(&self, extra: &[&str]) -> Output {
        let backups = self.backups().display().to_string();
        let manifest = self.manifest_arg();
        let mut args = vec![
            "apiserver",
            "disable",
            "--manifest",
            &manifest,
            "--backup-dir",
            &backups,
        ];
        args.extend_from_slice(extra);
        atrest(&args)
    }
}

fn kubeadm_manifests() -> Vec<(String, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/kubeadm");
    let mut out: Vec<(String, String)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with("-kube-apiserver.yaml"))
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read_to_string(&p).unwrap(),
            )
        })
        .collect();
    out.sort();
    assert!(out.len() >= 5, "testdata/kubeadm has the manifests");
    out
}

#[test]
fn enable_then_disable_round_trips_every_kubeadm_version() {
    for (name, original) in kubeadm_manifests() {
        let node = Node::new(&original);
        let enc = node.enc();
        let enc_dir = node.root.join("enc").display().to_string();
        let out = node.enable(&["--kms-socket-dir", "/run/atrest", "--automatic-reload"]);
        assert_eq!(out.status.code(), Some(0), "{name}: {}", text(&out.stderr));
        let stdout = text(&out.stdout);
        let enabled = node.read();
        // Exactly the flag (where kubeadm sorts it) and the mounts and volumes (first: sorted by
        // name), nothing else.
        let expected = original
            .replacen(
                "    - --enable-bootstrap-token-auth=true\n",
                &format!("    - --enable-bootstrap-token-auth=true\n    - --encryption-provider-config={enc}\n    - --encryption-provider-config-automatic-reload=true\n"),
                1,
            )
            .replacen(
                "    volumeMounts:\n",
                &format!("    volumeMounts:\n    - mountPath: {enc_dir}\n      name: atrest-encryption-config\n      readOnly: true\n    - mountPath: /run/atrest\n      name: atrest-kms-socket\n"),
                1,
            )
            .replacen(
                "  volumes:\n",
                &format!("  volumes:\n  - hostPath:\n      path: {enc_dir}\n      type: DirectoryOrCreate\n    name: atrest-encryption-config\n  - hostPath:\n      path: /run/atrest\n      type: DirectoryOrCreate\n    name: atrest-kms-socket\n"),
                1,
            );
        assert_eq!(enabled, expected, "{name}");
        // The result is a valid Pod with the flag exactly once.
        let pod = &yaml_rust2::YamlLoader::load_from_str(&enabled).unwrap()[0];
        let command = pod["spec"]["containers"][0]["command"].as_vec().unwrap();
        let flags: Vec<&str> = command.iter().filter_map(|c| c.as_str()).collect();
        assert_eq!(
            flags
                .iter()
                .filter(|f| f.starts_with("--encryption-provider-config="))
                .count(),
            1
        );
        // Backup: outside the manifests directory, named on stdout, the original bytes.
        let backup_line = stdout
            .lines()
            .find(|l| l.starts_with("backup: "))
            .expect(&stdout);
        let backup = PathBuf::from(backup_line.trim_start_matches("backup: "));
        assert!(backup.starts_with(node.backups()), "{backup:?}");
        assert_eq!(std::fs::read_to_string(&backup).unwrap(), original);
        assert_eq!(
            std::fs::metadata(&backup).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(
            std::fs::metadata(node.manifest())
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o600,
            "{name}: mode kept"
        );
        assert!(
            node.stray_files().is_empty(),
            "{name}: {:?}",
            node.stray_files()
        );

        // Idempotent: nothing changes, no new backup.
        let backups_before = std::fs::read_dir(node.backups()).unwrap().count();
        let again = node.enable(&["--kms-socket-dir", "/run/atrest", "--automatic-reload"]);
        assert_eq!(again.status.code(), Some(0), "{}", text(&again.stderr));
        assert!(
            text(&again.stdout).contains("nothing changed"),
            "{}",
            text(&again.stdout)
        );
        assert_eq!(node.read(), enabled);
        assert_eq!(
            std::fs::read_dir(node.backups()).unwrap().count(),
            backups_before
        );

        let off = node.disable(&[]);
        assert_eq!(off.status.code(), Some(0), "{}", text(&off.stderr));
        assert_eq!(
            node.read(),
            original,
            "{name}: disable restores the file byte for byte"
        );
        assert!(
            node.stray_files().is_empty(),
            "{name}: {:?}",
            node.stray_files()
        );
        let off_again = node.disable(&[]);
        assert!(text(&off_again.stdout).contains("nothing changed"));
    }
}

#[test]
fn dry_run_prints_a_unified_diff_and_changes_nothing() {
    let (_, original) = kubeadm_manifests().pop().unwrap();
    let node = Node::new(&original);
    let out = node.enable(&["--dry-run"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let diff = text(&out.stdout);
    let m = node.manifest_arg();
    assert!(
        diff.starts_with(&format!("--- {m}\n+++ {m}\n@@ ")),
        "{diff}"
    );
    assert!(
        diff.contains(&format!(
            "\n+    - --encryption-provider-config={}\n",
            node.enc()
        )),
        "{diff}"
    );
    assert!(
        diff.contains("\n+    name: atrest-encryption-config\n"),
        "{diff}"
    );
    assert!(!diff.contains("\n-"), "nothing removed: {diff}");
    assert_eq!(node.read(), original);
    assert!(!node.backups().exists(), "no backup on a dry run");
    assert!(node.stray_files().is_empty());
}

#[test]
fn a_different_config_value_is_replaced_and_duplicates_removed() {
    let (_, original) = kubeadm_manifests().pop().unwrap();
    let with_old = original.replace(
        "    - --etcd-cafile=",
        "    - --encryption-provider-config=/etc/kubernetes/old.yaml\n    - --encryption-provider-config=/etc/kubernetes/older.yaml\n    - --etcd-cafile=",
    );
    let node = Node::new(&with_old);
    let out = node.enable(&[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let now = node.read();
    assert_eq!(
        now.matches("--encryption-provider-config=").count(),
        1,
        "{now}"
    );
    assert!(now.contains(&format!(
        "    - --encryption-provider-config={}\n    - --etcd-cafile=",
        node.enc()
    )));
    assert!(!now.contains("automatic-reload"), "not asked for");
}

#[test]
fn bad_input_is_exit_1_naming_the_file_and_changes_nothing() {
    let (_, original) = kubeadm_manifests().pop().unwrap();
    // Missing manifest.
    let node = Node::new(&original);
    std::fs::remove_file(node.manifest()).unwrap();
    let out = node.enable(&[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains(&node.manifest_arg()),
        "{}",
        text(&out.stderr)
    );
    assert!(node.stray_files().is_empty());

    // Malformed manifests: bad YAML, not a Pod, no containers.
    for bad in [
        original.replace("  containers:\n", "  containers: [\n"),
        original.replace("kind: Pod", "kind: Deployment"),
        "apiVersion: v1\nkind: Pod\nspec:\n  hostNetwork: true\n".to_string(),
    ] {
        let node = Node::new(&bad);
        let out = node.enable(&[]);
        assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
        let err = text(&out.stderr);
        assert!(err.contains(&node.manifest_arg()), "{err}");
        assert_eq!(node.read(), bad, "untouched");
        assert!(node.stray_files().is_empty());
        assert!(!node.backups().exists());
    }

    // A config kube-apiserver would refuse: nothing is changed.
    let node = Node::new(&original);
    std::fs::write(node.enc(), "kind: EncryptionConfiguration\nresources: []\n").unwrap();
    let out = node.enable(&[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains(&node.enc()),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(node.read(), original);

    // A backup directory inside the manifests directory is refused.
    let node = Node::new(&original);
    let inside = node.root.join("manifests/backup").display().to_string();
    let manifest = node.manifest_arg();
    let enc = node.enc();
    let out = atrest(&[
        "apiserver",
        "enable",
        "--manifest",
        &manifest,
        "--config",
        &enc,
        "--backup-dir",
        &inside,
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("inside the manifests directory"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(node.read(), original);

    // A relative config path cannot work inside the pod.
    let out = atrest(&[
        "apiserver",
        "enable",
        "--manifest",
        &manifest,
        "--config",
        "enc.yaml",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("absolute"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn flavors_print_snippets_and_touch_nothing() {
    let k3s = atrest(&[
        "apiserver",
        "enable",
        "--flavor",
        "k3s",
        "--config",
        "/etc/atrest/enc.yaml",
        "--automatic-reload",
        "--manifest",
        "/nonexistent/kube-apiserver.yaml",
    ]);
    assert_eq!(k3s.status.code(), Some(0), "{}", text(&k3s.stderr));
    let s = text(&k3s.stdout);
    assert!(s.contains("/etc/rancher/k3s/config.yaml"), "{s}");
    assert!(s.contains("kube-apiserver-arg:\n  - encryption-provider-config=/etc/atrest/enc.yaml\n  - encryption-provider-config-automatic-reload=true\n"), "{s}");
    let rke2 = text(
        &atrest(&[
            "apiserver",
            "enable",
            "--flavor",
            "rke2",
            "--config",
            "/etc/atrest/enc.yaml",
            "--kms-socket-dir",
            "/run/atrest",
        ])
        .stdout,
    );
    assert!(rke2.contains("kube-apiserver-extra-mount:\n  - /etc/atrest:/etc/atrest:ro\n  - /run/atrest:/run/atrest\n"), "{rke2}");
    let talos = text(
        &atrest(&[
            "apiserver",
            "enable",
            "--flavor",
            "talos",
            "--config",
            "/var/etc/atrest/enc.yaml",
        ])
        .stdout,
    );
    let doc = &yaml_rust2::YamlLoader::load_from_str(&talos).unwrap()[0];
    assert_eq!(
        doc["cluster"]["apiServer"]["extraArgs"]["encryption-provider-config"].as_str(),
        Some("/var/etc/atrest/enc.yaml")
    );
}

#[test]
fn config_in_a_broad_or_already_mounted_directory() {
    let (_, original) = kubeadm_manifests().pop().unwrap();
    // Directly in /etc/kubernetes (next to admin.conf): only the file is mounted.
    let node = Node::new(&original);
    let enc = node.root.join("enc.yaml");
    std::fs::copy(node.enc(), &enc).unwrap();
    let (manifest, enc_s) = (node.manifest_arg(), enc.display().to_string());
    let backups = node.backups().display().to_string();
    let out = atrest(&[
        "apiserver",
        "enable",
        "--manifest",
        &manifest,
        "--config",
        &enc_s,
        "--backup-dir",
        &backups,
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let now = node.read();
    assert!(
        now.contains(&format!("  - hostPath:\n      path: {enc_s}\n      type: File\n    name: atrest-encryption-config\n")),
        "{now}"
    );
    assert!(now.contains(&format!(
        "    - mountPath: {enc_s}\n      name: atrest-encryption-config\n      readOnly: true\n"
    )));

    // In a directory kubeadm already mounts at the same path (here: its pki directory): only
    // the flag is added.
    let pki = node.root.join("pki");
    std::fs::create_dir_all(&pki).unwrap();
    let in_pki = pki.join("enc.yaml");
    std::fs::copy(node.enc(), &in_pki).unwrap();
    let with_pki = original.replace("/etc/kubernetes/pki", &pki.display().to_string());
    std::fs::write(node.manifest(), &with_pki).unwrap();
    let in_pki_s = in_pki.display().to_string();
    let out = atrest(&[
        "apiserver",
        "enable",
        "--manifest",
        &manifest,
        "--config",
        &in_pki_s,
        "--backup-dir",
        &backups,
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("k8s-certs"),
        "{}",
        text(&out.stderr)
    );
    let now = node.read();
    let flag = format!("    - --encryption-provider-config={in_pki_s}\n");
    assert_eq!(now.replace(&flag, ""), with_pki, "only the flag: {now}");
}
