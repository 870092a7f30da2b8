//! The EncryptionConfiguration file under a running monitor, with kube-apiserver's automatic-reload
//! semantics: poll the file, compare the `sha256:<hex>` of its bytes with the applied one, and on a
//! change load it fully (same rules as at start); a file that does not load leaves the old config
//! in force and is counted as a failed reload.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use atrest_core::config::{content_hash, load_file, EncryptionConfiguration, LoadOptions};
use atrest_core::kms::KmsConnector;
use atrest_core::Transformers;
use zeroize::Zeroizing;

use crate::kms::{KmsStates, ObservingConnector};
use crate::MonitorError;

/// One applied config.
pub struct Loaded {
    pub config: EncryptionConfiguration,
    /// `sha256:<hex>` of the file's bytes.
    pub hash: String,
    pub transformers: Transformers,
    pub kms: Arc<KmsStates>,
}

/// Where the config comes from and how it loads.
pub struct ConfigSource {
    path: PathBuf,
    opts: LoadOptions,
    connector: Arc<dyn KmsConnector>,
}

impl ConfigSource {
    pub fn new(path: &Path, opts: LoadOptions, connector: Arc<dyn KmsConnector>) -> Self {
        Self {
            path: path.to_path_buf(),
            opts,
            connector,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The hash of the file as it is now.
    pub fn current_hash(&self) -> Result<String, MonitorError> {
        let bytes =
            std::fs::read(&self.path)
                .map(Zeroizing::new)
                .map_err(|e| MonitorError::Config {
                    path: self.path.display().to_string(),
                    message: e.to_string(),
                })?;
        Ok(content_hash(&bytes))
    }

    /// Loads the file and builds its transformers (KMS v2 plugins observed, see [`crate::kms`]).
    /// No plugin is called here.
    pub fn load(&self) -> Result<Loaded, MonitorError> {
        let err = |message: String| MonitorError::Config {
            path: self.path.display().to_string(),
            message,
        };
        let config = load_file(&self.path, &self.opts).map_err(|e| err(e.to_string()))?;
        self.build(config)
    }

    /// Fresh transformers (new KMS v2 states, nothing cached) for an already loaded config. Every
    /// scan starts with these, so a KMS key_id seen by the monitor is the one the scan uses.
    pub fn build(&self, config: EncryptionConfiguration) -> Result<Loaded, MonitorError> {
        let observing = ObservingConnector::new(Arc::clone(&self.connector));
        let kms = observing.states();
        let transformers = Transformers::build(&config, Arc::new(observing)).map_err(|e| {
            MonitorError::Config {
                path: self.path.display().to_string(),
                message: e.to_string(),
            }
        })?;
        Ok(Loaded {
            hash: config.content_hash.clone(),
            config,
            transformers,
            kms,
        })
    }
}
