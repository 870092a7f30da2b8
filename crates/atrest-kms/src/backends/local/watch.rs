//! Rotation picked up at once: an inotify watch (the `notify` crate) on the key store directory
//! reloads the key set as soon as a KEK file appears, is replaced or goes away, so Status reports a
//! rotated key id right after `atrest kms rotate`. The periodic [`refresh`](super::LocalBackend)
//! from the health loop stays as the fallback (missed events, filesystems without inotify).
//!
//! `atrest kms rotate` writes a temporary file and renames it to `kek-NNNNNNNN.json`, so the
//! rename is the event that matters; events on other names (the temporary file) are ignored.

use std::sync::{Arc, Weak};

use notify::{EventKind, RecursiveMode, Watcher};

use super::store::is_kek_file_name;
use super::LocalBackend;
use crate::backend::BackendError;

/// An active watch; dropping it stops watching.
pub struct StoreWatch {
    _watcher: notify::RecommendedWatcher,
}

/// Whether an event can change the key set: a KEK file created, renamed, rewritten or removed.
fn relevant(event: &notify::Event) -> bool {
    let kind_matters = matches!(
        event.kind,
        EventKind::Create(_) | EventKind::Modify(_) | EventKind::Remove(_) | EventKind::Any
    );
    kind_matters
        && event.paths.iter().any(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(is_kek_file_name)
        })
}

/// Starts watching `backend`'s store directory (idempotent). The watch holds only a weak
/// reference, so it never keeps the backend alive.
pub fn start(backend: &Arc<LocalBackend>) -> Result<(), BackendError> {
    let mut slot = match backend.watcher.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    };
    if slot.is_some() {
        return Ok(());
    }
    let weak: Weak<LocalBackend> = Arc::downgrade(backend);
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Some(backend) = weak.upgrade() else {
            return;
        };
        match event {
            Ok(event) if relevant(&event) => {
                if let Err(e) = backend.reload() {
                    // A half-finished change; the next event or the periodic refresh retries.
                    tracing::warn!(error = %e, "reloading the local key store after a change failed");
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "key store watch error; relying on the periodic refresh"),
        }
    })
    .map_err(|e| BackendError::Config(format!("cannot watch the key store: {e}")))?;
    let dir = backend.store.dir().to_path_buf();
    watcher
        .watch(&dir, RecursiveMode::NonRecursive)
        .map_err(|e| {
            BackendError::Config(format!("cannot watch the key store {}: {e}", dir.display()))
        })?;
    tracing::debug!(dir = %dir.display(), "watching the local key store for rotations");
    *slot = Some(StoreWatch { _watcher: watcher });
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use notify::event::{CreateKind, ModifyKind, RenameMode};
    use notify::{Event, EventKind};

    use super::relevant;

    fn event(kind: EventKind, name: &str) -> Event {
        Event::new(kind).add_path(PathBuf::from("/ks").join(name))
    }

    #[test]
    fn only_kek_files_matter() {
        let renamed = EventKind::Modify(ModifyKind::Name(RenameMode::To));
        assert!(relevant(&event(renamed, "kek-00000002.json")));
        assert!(relevant(&event(
            EventKind::Create(CreateKind::File),
            "kek-00000002.json"
        )));
        assert!(!relevant(&event(
            EventKind::Create(CreateKind::File),
            "kek-00000002.tmp4242"
        )));
        assert!(!relevant(&event(
            EventKind::Access(notify::event::AccessKind::Any),
            "kek-00000002.json"
        )));
        assert!(!relevant(&event(renamed, "store.json")));
    }
}
