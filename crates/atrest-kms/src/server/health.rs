//! The backend health state Status answers from, refreshed in the background.
//!
//! Every `interval` the loop asks the backend to [`refresh`](crate::KeyBackend::refresh) (pick up
//! rotated keys, renew tokens) and to [`probe`](crate::KeyBackend::probe) itself with a real
//! wrap/unwrap of a fixed test value, each under the call timeout. Status never calls the backend
//! for crypto; it reads this state (and the in-memory current key id). A data call failing with an
//! "unavailable" error also marks the state unhealthy at once; the next good probe restores it.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use super::metrics::Metrics;
use crate::backend::{BackendError, KeyBackend};

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Health {
    Ok,
    Failing(String),
}

pub(crate) struct HealthState {
    state: RwLock<Health>,
    metrics: Arc<Metrics>,
}

impl HealthState {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            state: RwLock::new(Health::Failing("not checked yet".into())),
            metrics,
        }
    }

    pub fn get(&self) -> Health {
        match self.state.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    pub fn set(&self, h: Health) {
        let healthy = h == Health::Ok;
        let changed = {
            let mut g = match self.state.write() {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            };
            let changed = *g != h;
            *g = h.clone();
            changed
        };
        self.metrics.set_healthy(healthy);
        if changed {
            match h {
                Health::Ok => tracing::info!("backend healthy"),
                Health::Failing(reason) => tracing::warn!(%reason, "backend unhealthy"),
            }
        }
    }

    /// Called when a data call failed in a way that says the backend is down.
    pub fn report_call_error(&self, e: &BackendError) {
        if let BackendError::Unavailable(msg) = e {
            self.set(Health::Failing(msg.clone()));
        }
    }
}

/// One refresh + probe round.
pub(crate) async fn check(
    backend: &dyn KeyBackend,
    health: &HealthState,
    metrics: &Metrics,
    timeout: Duration,
) {
    let before = backend.current_key_id().ok();
    let result = async {
        tokio::time::timeout(timeout, backend.refresh())
            .await
            .map_err(|_| {
                BackendError::Unavailable(format!("refresh timed out after {timeout:?}"))
            })??;
        tokio::time::timeout(timeout, backend.probe())
            .await
            .map_err(|_| BackendError::Unavailable(format!("probe timed out after {timeout:?}")))?
    }
    .await;
    let after = backend.current_key_id().ok();
    if let (Some(a), Some(b)) = (&before, &after) {
        if a != b {
            metrics.key_id_changed(b);
            tracing::info!(old_key_id = %a, new_key_id = %b, "current key id changed");
        }
    }
    if let Some(b) = &after {
        metrics.set_key_id(b);
    }
    health.set(match result {
        Ok(()) => Health::Ok,
        Err(e) => Health::Failing(e.to_string()),
    });
}

/// Runs [`check`] every `interval` until the task is dropped.
pub(crate) async fn run(
    backend: Arc<dyn KeyBackend>,
    health: Arc<HealthState>,
    metrics: Arc<Metrics>,
    interval: Duration,
    timeout: Duration,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await; // the first check ran before serving
    loop {
        tick.tick().await;
        check(backend.as_ref(), &health, &metrics, timeout).await;
    }
}
