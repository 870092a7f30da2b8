//! The text edits `apiserver enable/disable` make to a kube-apiserver static-pod manifest: one
//! flag set exactly once, hostPath volumes and mounts added, replaced or removed by name. Each step
//! parses the current text, changes at most one spot as whole lines, and returns the new text;
//! steps repeat until nothing changes, so every byte outside the edited lines stays as it was and a
//! second run changes nothing.
//!
//! New lines follow kubeadm's layout (its manifests keep flags, volumes and mounts sorted by name,
//! sequences not indented under their key): a new item is put before the first item that sorts
//! after it, with the indentation of its neighbours.

use std::path::Path;

use super::yaml_tree::{self, Node, ParseError};

/// kube-apiserver's flag for the EncryptionConfiguration file.
pub const CONFIG_FLAG: &str = "--encryption-provider-config";
/// And for re-reading it when it changes.
pub const RELOAD_FLAG: &str = "--encryption-provider-config-automatic-reload";
/// Names of the volumes (and mounts) atrest adds; `disable` removes exactly these.
pub const CONFIG_VOLUME: &str = "atrest-encryption-config";
pub const SOCKET_VOLUME: &str = "atrest-kms-socket";

#[derive(Debug, thiserror::Error)]
pub enum EditError {
    #[error("not valid YAML: {0}")]
    Parse(#[from] ParseError),
    #[error("{0}")]
    Shape(String),
    #[error("line {line}: {what}; atrest edits kubeadm's block-style layout only, edit this spot by hand")]
    Unsupported { line: usize, what: String },
}

type Result<T> = std::result::Result<T, EditError>;

/// A hostPath volume and its mount in the kube-apiserver container (same path inside and out).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostMount {
    pub name: &'static str,
    pub path: String,
    /// kubelet's hostPath type: `DirectoryOrCreate` or `File`.
    pub kind: &'static str,
    pub read_only: bool,
}

/// The kube-apiserver container (by name, else by its command, else the only container).
pub fn container(root: &Node) -> Result<&Node> {
    if root.entries().is_none() {
        return Err(EditError::Shape(
            "the document is not a mapping (expected a Pod)".into(),
        ));
    }
    if let Some(kind) = root.get("kind").and_then(Node::as_str) {
        if kind != "Pod" {
            return Err(EditError::Shape(format!("kind is {kind:?}, expected Pod")));
        }
    }
    let containers = root
        .get("spec")
        .and_then(|s| s.get("containers"))
        .and_then(Node::items)
        .ok_or_else(|| EditError::Shape("no spec.containers list".into()))?;
    let by_name = containers
        .iter()
        .find(|c| c.get("name").and_then(Node::as_str) == Some("kube-apiserver"));
    let by_command = || {
        containers.iter().find(|c| {
            c.get("command")
                .and_then(Node::items)
                .and_then(|i| i.first())
                .and_then(Node::as_str)
                .is_some_and(|s| s.ends_with("kube-apiserver"))
        })
    };
    match by_name.or_else(by_command) {
        Some(c) => Ok(c),
        None if containers.len() == 1 => Ok(&containers[0]),
        None => Err(EditError::Shape(
            "no container named kube-apiserver in spec.containers".into(),
        )),
    }
}

fn spec(root: &Node) -> Result<&Node> {
    root.get("spec")
        .ok_or_else(|| EditError::Shape("no spec".into()))
}

/// The flag's name without dashes and value: `--a-b=c` → `a-b`.
fn flag_name(arg: &str) -> &str {
    arg.trim_start_matches('-')
        .split('=')
        .next()
        .unwrap_or_default()
}

fn is_flag(arg: &str, flag: &str) -> bool {
    arg == flag || arg.strip_prefix(flag).is_some_and(|r| r.starts_with('='))
}

struct Lines(Vec<String>);

impl Lines {
    fn new(text: &str) -> Lines {
        Lines(text.split_inclusive('\n').map(str::to_owned).collect())
    }

    fn line(&self, n: usize) -> &str {
        self.0.get(n).map(String::as_str).unwrap_or("")
    }

    /// The indentation before the `- ` of the sequence item starting on line `n` at column `col`.
    fn dash_prefix(&self, item: &Node) -> Result<String> {
        let line = self.line(item.start.line);
        let before: String = line.chars().take(item.start.col).collect();
        let trimmed = before.trim_end();
        match trimmed.strip_suffix('-') {
            Some(indent) if indent.chars().all(|c| c == ' ') => Ok(indent.to_owned()),
            _ => Err(EditError::Unsupported {
                line: item.start.line + 1,
                what: "a list item that does not start its line with `- `".into(),
            }),
        }
    }

    fn is_filler(&self, n: usize) -> bool {
        let t = self.line(n).trim();
        t.is_empty() || t.starts_with('#')
    }

    /// End (exclusive line) of a node that ends where `end_line` begins, without the blank and
    /// comment lines before it (they belong to what follows).
    fn trimmed_end(&self, start: usize, end_line: usize) -> usize {
        let mut end = end_line.min(self.0.len()).max(start + 1);
        while end > start + 1 && self.is_filler(end - 1) {
            end -= 1;
        }
        end
    }

    fn replace(mut self, range: std::ops::Range<usize>, new: Vec<String>) -> String {
        let at = range.start.min(self.0.len());
        if at > 0 && at == self.0.len() && !self.0[at - 1].ends_with('\n') {
            self.0[at - 1].push('\n');
        }
        let end = range.end.min(self.0.len());
        self.0.splice(at..end, new);
        self.0.concat()
    }
}

fn block_seq<'a>(lines: &Lines, node: &'a Node, what: &str) -> Result<&'a [Node]> {
    let flow = lines
        .line(node.start.line)
        .chars()
        .nth(node.start.col)
        .is_some_and(|c| c == '[');
    match node.items() {
        Some(items) if !flow => Ok(items),
        Some(_) => Err(EditError::Unsupported {
            line: node.start.line + 1,
            what: format!("{what} is a flow-style list `[...]`"),
        }),
        None => Err(EditError::Shape(format!(
            "{what} (line {}) is not a list",
            node.start.line + 1
        ))),
    }
}

/// Lines of item `i` of a block sequence.
fn item_range(lines: &Lines, seq: &Node, items: &[Node], i: usize) -> std::ops::Range<usize> {
    let start = items[i].start.line;
    let end = match items.get(i + 1) {
        Some(next) => next.start.line,
        None => lines.trimmed_end(start, seq.end.line),
    };
    start..end.max(start + 1)
}

/// Where a new item goes in a non-empty block sequence — before item `before`, else after the
/// last — and the indentation of its `- `.
fn insertion_point(
    lines: &Lines,
    seq: &Node,
    items: &[Node],
    before: Option<usize>,
) -> Result<(usize, String)> {
    Ok(match before {
        Some(i) => (items[i].start.line, lines.dash_prefix(&items[i])?),
        None => {
            let last = items.len() - 1;
            (
                item_range(lines, seq, items, last).end,
                lines.dash_prefix(&items[last])?,
            )
        }
    })
}

/// Lines of entry `key` (key and value) of a block mapping.
fn key_range(lines: &Lines, map: &Node, key: &str) -> std::ops::Range<usize> {
    let idx = map
        .entries()
        .unwrap_or_default()
        .iter()
        .position(|(k, _)| k.as_str() == Some(key))
        .unwrap_or_default();
    entry_range(lines, map, idx)
}

/// Lines of entry `i` (key and value) of a block mapping.
fn entry_range(lines: &Lines, map: &Node, i: usize) -> std::ops::Range<usize> {
    let entries = map.entries().unwrap_or_default();
    let start = entries[i].0.start.line;
    let end = match entries.get(i + 1) {
        Some((next, _)) => lines.trimmed_end(start, next.start.line),
        None => lines.trimmed_end(start, map.end.line),
    };
    start..end.max(start + 1)
}

/// Sets `flag=value` exactly once in the container's command/args (`None`: removes every
/// occurrence). Returns the new text if something changed.
pub fn step_flag(text: &str, flag: &str, value: Option<&str>) -> Result<Option<String>> {
    let root = yaml_tree::parse(text)?;
    let lines = Lines::new(text);
    let c = container(&root)?;
    let mut lists = Vec::new();
    for key in ["command", "args"] {
        if let Some(node) = c.get(key) {
            lists.push((key, node, block_seq(&lines, node, key)?));
        }
    }
    let mut found = Vec::new();
    for (li, (_, _, items)) in lists.iter().enumerate() {
        for (i, item) in items.iter().enumerate() {
            if item.as_str().is_some_and(|s| is_flag(s, flag)) {
                found.push((li, i));
            }
        }
    }
    let want = value.map(|v| format!("{flag}={v}"));
    let remove = |(li, i): (usize, usize), lines: Lines| -> Result<String> {
        let (key, seq, items) = lists[li];
        if items.len() == 1 {
            // The list would be empty: remove the key too (`args:` with nothing is null).
            let range = key_range(&lines, c, key);
            return Ok(lines.replace(range, Vec::new()));
        }
        let range = item_range(&lines, seq, items, i);
        Ok(lines.replace(range, Vec::new()))
    };
    let Some(want) = want else {
        return match found.first() {
            Some(&at) => Ok(Some(remove(at, lines)?)),
            None => Ok(None),
        };
    };
    if found.len() > 1 {
        return Ok(Some(remove(found[1], lines)?));
    }
    if let Some(&(li, i)) = found.first() {
        let (_, seq, items) = lists[li];
        if items[i].as_str() == Some(want.as_str()) {
            return Ok(None);
        }
        let prefix = lines.dash_prefix(&items[i])?;
        let range = item_range(&lines, seq, items, i);
        return Ok(Some(
            lines.replace(range, vec![format!("{prefix}- {want}\n")]),
        ));
    }
    let Some(&(_, seq, items)) = lists.first() else {
        return Err(EditError::Shape(
            "the kube-apiserver container has neither command nor args".into(),
        ));
    };
    if items.is_empty() {
        return Err(EditError::Shape(
            "the kube-apiserver container's command is empty".into(),
        ));
    }
    let name = flag_name(&want);
    let before = items.iter().position(|item| {
        item.as_str()
            .is_some_and(|s| s.starts_with("--") && flag_name(s) > name)
    });
    let (at, prefix) = insertion_point(&lines, seq, items, before)?;
    Ok(Some(
        lines.replace(at..at, vec![format!("{prefix}- {want}\n")]),
    ))
}

fn mount_lines(m: &HostMount, prefix: &str) -> Vec<String> {
    let mut out = vec![
        format!("{prefix}- mountPath: {}\n", m.path),
        format!("{prefix}  name: {}\n", m.name),
    ];
    if m.read_only {
        out.push(format!("{prefix}  readOnly: true\n"));
    }
    out
}

fn volume_lines(m: &HostMount, prefix: &str) -> Vec<String> {
    vec![
        format!("{prefix}- hostPath:\n"),
        format!("{prefix}    path: {}\n", m.path),
        format!("{prefix}    type: {}\n", m.kind),
        format!("{prefix}  name: {}\n", m.name),
    ]
}

fn keys(node: &Node) -> Vec<&str> {
    node.entries()
        .unwrap_or_default()
        .iter()
        .filter_map(|(k, _)| k.as_str())
        .collect()
}

fn mount_matches(item: &Node, m: &HostMount) -> bool {
    let ro = item.get("readOnly").and_then(Node::as_str) == Some("true");
    let mut k = keys(item);
    k.sort_unstable();
    let want: &[&str] = if m.read_only {
        &["mountPath", "name", "readOnly"]
    } else {
        &["mountPath", "name"]
    };
    item.get("mountPath").and_then(Node::as_str) == Some(m.path.as_str())
        && ro == m.read_only
        && k == want
}

fn volume_matches(item: &Node, m: &HostMount) -> bool {
    let mut k = keys(item);
    k.sort_unstable();
    let hp = item.get("hostPath");
    let mut hk = hp.map(keys).unwrap_or_default();
    hk.sort_unstable();
    k == ["hostPath", "name"]
        && hk == ["path", "type"]
        && hp.and_then(|h| h.get("path")).and_then(Node::as_str) == Some(m.path.as_str())
        && hp.and_then(|h| h.get("type")).and_then(Node::as_str) == Some(m.kind)
}

/// Which list of which mapping a step works on.
#[derive(Clone, Copy)]
enum Target {
    /// The kube-apiserver container's `volumeMounts`.
    Mounts,
    /// The pod's `spec.volumes`.
    Volumes,
}

impl Target {
    fn parent(self, root: &Node) -> Result<&Node> {
        match self {
            Target::Mounts => container(root),
            Target::Volumes => spec(root),
        }
    }
    fn key(self) -> &'static str {
        match self {
            Target::Mounts => "volumeMounts",
            Target::Volumes => "volumes",
        }
    }
    fn render(self, m: &HostMount, prefix: &str) -> Vec<String> {
        match self {
            Target::Mounts => mount_lines(m, prefix),
            Target::Volumes => volume_lines(m, prefix),
        }
    }
    fn matches(self, item: &Node, m: &HostMount) -> bool {
        match self {
            Target::Mounts => mount_matches(item, m),
            Target::Volumes => volume_matches(item, m),
        }
    }
}

fn item_name(item: &Node) -> Option<&str> {
    item.get("name").and_then(Node::as_str)
}

/// Adds or corrects the volume (or mount) `m`.
fn step_ensure(text: &str, target: Target, m: &HostMount) -> Result<Option<String>> {
    let root = yaml_tree::parse(text)?;
    let lines = Lines::new(text);
    let parent = target.parent(&root)?;
    let key = target.key();
    let entries = parent.entries().unwrap_or_default();
    match parent.entry(key) {
        Some((_, seq)) if !seq.is_null() => {
            let items = block_seq(&lines, seq, key)?;
            if let Some(i) = items.iter().position(|it| item_name(it) == Some(m.name)) {
                if target.matches(&items[i], m) {
                    return Ok(None);
                }
                let prefix = lines.dash_prefix(&items[i])?;
                let range = item_range(&lines, seq, items, i);
                return Ok(Some(lines.replace(range, target.render(m, &prefix))));
            }
            if items.is_empty() {
                return Err(EditError::Shape(format!("{key} is an empty list")));
            }
            let before = items
                .iter()
                .position(|it| item_name(it).is_some_and(|n| n > m.name));
            let (at, prefix) = insertion_point(&lines, seq, items, before)?;
            Ok(Some(lines.replace(at..at, target.render(m, &prefix))))
        }
        existing => {
            // No list yet (or `key:` with nothing): a new key, at its sorted place.
            let Some((first_key, _)) = entries.first() else {
                return Err(EditError::Shape(format!(
                    "cannot add {key} to an empty mapping"
                )));
            };
            let indent = " ".repeat(first_key.start.col);
            let mut new = vec![format!("{indent}{key}:\n")];
            new.extend(target.render(m, &indent));
            if let Some((k, _)) = existing {
                let idx = entries
                    .iter()
                    .position(|(e, _)| e.start == k.start)
                    .unwrap_or_default();
                let range = entry_range(&lines, parent, idx);
                return Ok(Some(lines.replace(range, new)));
            }
            // Never before the first key: in a list item it shares the `- ` line.
            let at = match entries
                .iter()
                .skip(1)
                .position(|(k, _)| k.as_str().is_some_and(|s| s > key))
            {
                Some(i) => entries[i + 1].0.start.line,
                None => entry_range(&lines, parent, entries.len() - 1).end,
            };
            Ok(Some(lines.replace(at..at, new)))
        }
    }
}

/// Removes the volume (or mount) called `name`; removes the key when the list would be empty.
fn step_remove(text: &str, target: Target, name: &str) -> Result<Option<String>> {
    let root = yaml_tree::parse(text)?;
    let lines = Lines::new(text);
    let parent = target.parent(&root)?;
    let key = target.key();
    let Some(seq) = parent.get(key).filter(|s| !s.is_null()) else {
        return Ok(None);
    };
    let items = block_seq(&lines, seq, key)?;
    let Some(i) = items.iter().position(|it| item_name(it) == Some(name)) else {
        return Ok(None);
    };
    let range = if items.len() == 1 {
        key_range(&lines, parent, key)
    } else {
        item_range(&lines, seq, items, i)
    };
    Ok(Some(lines.replace(range, Vec::new())))
}

/// Runs `step` until it reports no change (bounded: a step that keeps changing is a bug).
fn settle(
    mut text: String,
    mut step: impl FnMut(&str) -> Result<Option<String>>,
) -> Result<String> {
    for _ in 0..64 {
        match step(&text)? {
            Some(next) if next != text => text = next,
            _ => return Ok(text),
        }
    }
    Err(EditError::Shape("the edit does not converge".into()))
}

/// What `enable` wants in the manifest.
#[derive(Debug, Clone)]
pub struct EnableSpec {
    pub config: String,
    pub automatic_reload: bool,
    /// Volumes to add (those not already covered by an existing mount).
    pub mounts: Vec<HostMount>,
    /// atrest volumes to remove (no longer needed, e.g. now covered or the socket dir dropped).
    pub drop: Vec<&'static str>,
}

pub fn enable(text: &str, spec: &EnableSpec) -> Result<String> {
    let mut text = settle(text.to_owned(), |t| {
        step_flag(t, CONFIG_FLAG, Some(&spec.config))
    })?;
    if spec.automatic_reload {
        text = settle(text, |t| step_flag(t, RELOAD_FLAG, Some("true")))?;
    }
    for m in &spec.mounts {
        text = settle(text, |t| step_ensure(t, Target::Volumes, m))?;
        text = settle(text, |t| step_ensure(t, Target::Mounts, m))?;
    }
    for name in &spec.drop {
        text = settle(text, |t| step_remove(t, Target::Mounts, name))?;
        text = settle(text, |t| step_remove(t, Target::Volumes, name))?;
    }
    Ok(text)
}

/// Removes what `enable` adds: both flags and the atrest volumes and mounts.
pub fn disable(text: &str) -> Result<String> {
    let mut text = settle(text.to_owned(), |t| step_flag(t, CONFIG_FLAG, None))?;
    text = settle(text, |t| step_flag(t, RELOAD_FLAG, None))?;
    for name in [CONFIG_VOLUME, SOCKET_VOLUME] {
        text = settle(text, |t| step_remove(t, Target::Mounts, name))?;
        text = settle(text, |t| step_remove(t, Target::Volumes, name))?;
    }
    Ok(text)
}

/// Whether kube-apiserver already sees a path through a mount that is not atrest's.
#[derive(Debug)]
pub enum Coverage {
    Covered(String),
    NotCovered,
    /// Another mount already uses `mount_path` for a different host path.
    Conflict(String),
}

/// The container's mounts that show a host path at the same path inside:
/// (name, path, read-only).
fn identity_mounts(root: &Node) -> Result<Vec<(String, String, bool, bool)>> {
    let c = container(root)?;
    let volumes = spec(root)?
        .get("volumes")
        .and_then(Node::items)
        .unwrap_or_default();
    let mounts = c
        .get("volumeMounts")
        .and_then(Node::items)
        .unwrap_or_default();
    let mut out = Vec::new();
    for m in mounts {
        let (Some(name), Some(inside)) = (item_name(m), m.get("mountPath").and_then(Node::as_str))
        else {
            continue;
        };
        let host = volumes
            .iter()
            .find(|v| item_name(v) == Some(name))
            .and_then(|v| v.get("hostPath"))
            .and_then(|h| h.get("path"))
            .and_then(Node::as_str);
        let ro = m.get("readOnly").and_then(Node::as_str) == Some("true");
        let same =
            host.is_some_and(|h| Path::new(h) == Path::new(inside)) && m.get("subPath").is_none();
        out.push((name.to_owned(), inside.to_owned(), ro, same));
    }
    Ok(out)
}

/// Whether `path` is visible (writable if `write`) inside the pod at the same path, through any
/// mount.
pub fn coverage_any(root: &Node, path: &Path, write: bool) -> Result<bool> {
    Ok(identity_mounts(root)?
        .iter()
        .any(|(_, inside, ro, same)| *same && path.starts_with(inside) && (!write || !ro)))
}

/// Whether a mount that is not atrest's already shows `path` inside the pod, or another mount
/// occupies `mount_path`.
pub fn coverage(root: &Node, path: &Path, mount_path: &Path, write: bool) -> Result<Coverage> {
    let theirs: Vec<_> = identity_mounts(root)?
        .into_iter()
        .filter(|(name, ..)| name != CONFIG_VOLUME && name != SOCKET_VOLUME)
        .collect();
    if let Some((name, ..)) = theirs
        .iter()
        .find(|(_, inside, ro, same)| *same && path.starts_with(inside) && (!write || !ro))
    {
        return Ok(Coverage::Covered(name.clone()));
    }
    // kubelet refuses two mounts at one path.
    Ok(
        match theirs
            .into_iter()
            .find(|(_, inside, ..)| Path::new(inside) == mount_path)
        {
            Some((name, ..)) => Coverage::Conflict(name),
            None => Coverage::NotCovered,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMALL: &str = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: kube-apiserver\nspec:\n  containers:\n  - command:\n    - kube-apiserver\n    - --allow-privileged=true\n    - --etcd-servers=https://127.0.0.1:2379\n    image: k\n    name: kube-apiserver\n  hostNetwork: true\nstatus: {}\n";

    fn spec_for(dir: &str) -> EnableSpec {
        EnableSpec {
            config: format!("{dir}/enc.yaml"),
            automatic_reload: true,
            mounts: vec![HostMount {
                name: CONFIG_VOLUME,
                path: dir.into(),
                kind: "DirectoryOrCreate",
                read_only: true,
            }],
            drop: vec![],
        }
    }

    #[test]
    fn adds_lists_that_do_not_exist_and_removes_them_again() {
        let out = enable(SMALL, &spec_for("/etc/enc")).unwrap();
        assert!(out.contains(
            "    - --allow-privileged=true\n    - --encryption-provider-config=/etc/enc/enc.yaml\n    - --encryption-provider-config-automatic-reload=true\n    - --etcd-servers"
        ), "{out}");
        assert!(out.contains("    name: kube-apiserver\n    volumeMounts:\n    - mountPath: /etc/enc\n      name: atrest-encryption-config\n      readOnly: true\n  hostNetwork: true\n"), "{out}");
        assert!(out.contains("  hostNetwork: true\n  volumes:\n  - hostPath:\n      path: /etc/enc\n      type: DirectoryOrCreate\n    name: atrest-encryption-config\nstatus: {}\n"), "{out}");
        assert_eq!(enable(&out, &spec_for("/etc/enc")).unwrap(), out);
        assert_eq!(disable(&out).unwrap(), SMALL);
    }

    #[test]
    fn replaces_a_different_value_and_drops_duplicates() {
        let text = SMALL.replace(
            "    - --etcd-servers",
            "    - --encryption-provider-config=/old.yaml\n    - --encryption-provider-config=/older.yaml\n    - --etcd-servers",
        );
        let out = enable(&text, &spec_for("/etc/enc")).unwrap();
        assert_eq!(out.matches("--encryption-provider-config=").count(), 1);
        assert!(out.contains("--encryption-provider-config=/etc/enc/enc.yaml"));
    }

    #[test]
    fn changed_config_directory_replaces_the_volume() {
        let first = enable(SMALL, &spec_for("/etc/enc")).unwrap();
        let second = enable(&first, &spec_for("/etc/other")).unwrap();
        assert!(!second.contains("/etc/enc"), "{second}");
        assert_eq!(second.matches("name: atrest-encryption-config").count(), 2);
        assert_eq!(second, enable(SMALL, &spec_for("/etc/other")).unwrap());
    }

    #[test]
    fn malformed_manifests_are_errors() {
        assert!(enable("kind: Pod\nspec: {}\n", &spec_for("/e")).is_err());
        assert!(enable("kind: Deployment\n", &spec_for("/e")).is_err());
        assert!(enable("a: [\n", &spec_for("/e")).is_err());
        assert!(enable("", &spec_for("/e")).is_err());
        let flow = SMALL.replace(
            "  - command:\n    - kube-apiserver\n    - --allow-privileged=true\n    - --etcd-servers=https://127.0.0.1:2379\n",
            "  - command: [kube-apiserver, --allow-privileged=true]\n",
        );
        let err = enable(&flow, &spec_for("/e")).unwrap_err().to_string();
        assert!(err.contains("flow-style"), "{err}");
    }
}
