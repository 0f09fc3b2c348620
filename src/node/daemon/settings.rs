//! The settings a user may change while the node runs: their limits, their check, and their
//! file in the state directory.

use serde::{Deserialize, Serialize};

use super::NodeError;

/// The settings file in the state directory (JSON).
pub const SETTINGS_FILE: &str = "node-settings.json";

/// Most downloads a node runs at once, at most (the `parallel` setting's ceiling).
pub const MAX_PARALLEL: usize = 64;

/// Most upload slots the setting takes.
pub const MAX_UPLOAD_SLOTS: usize = 1024;

/// What a user may change while the node runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Limit on download bandwidth in bytes per second (0: none).
    pub max_download_rate: u64,
    /// Limit on upload bandwidth in bytes per second (0: none).
    pub max_upload_rate: u64,
    /// Peers served at once. Applies from the node's next start (the peer server sizes its
    /// slots when it starts).
    pub upload_slots: usize,
    /// Queue items downloaded at once (1..=[`MAX_PARALLEL`]).
    pub parallel: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            max_download_rate: 0,
            max_upload_rate: 0,
            upload_slots: crate::peer::UPLOAD_SLOTS,
            parallel: 3,
        }
    }
}

/// A change of some settings (`None`: unchanged).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SettingsPatch {
    /// See [`Settings::max_download_rate`].
    pub max_download_rate: Option<u64>,
    /// See [`Settings::max_upload_rate`].
    pub max_upload_rate: Option<u64>,
    /// See [`Settings::upload_slots`].
    pub upload_slots: Option<usize>,
    /// See [`Settings::parallel`].
    pub parallel: Option<usize>,
}

pub(super) fn check_settings(s: &Settings) -> Result<(), NodeError> {
    if !(1..=MAX_PARALLEL).contains(&s.parallel) {
        return Err(NodeError::BadValue(format!(
            "parallel must be 1..={MAX_PARALLEL}"
        )));
    }
    if !(1..=MAX_UPLOAD_SLOTS).contains(&s.upload_slots) {
        return Err(NodeError::BadValue(format!(
            "upload_slots must be 1..={MAX_UPLOAD_SLOTS}"
        )));
    }
    Ok(())
}

pub(super) fn load_settings(state_dir: &std::path::Path) -> Option<Settings> {
    let text = std::fs::read_to_string(state_dir.join(SETTINGS_FILE)).ok()?;
    match serde_json::from_str(&text) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!("{SETTINGS_FILE}: {e}; using the defaults");
            None
        }
    }
}

pub(super) fn save_settings(state_dir: &std::path::Path, s: &Settings) -> Result<(), NodeError> {
    let path = state_dir.join(SETTINGS_FILE);
    let tmp = state_dir.join(format!("{SETTINGS_FILE}.tmp"));
    let text = serde_json::to_string_pretty(s).map_err(|e| NodeError::BadValue(e.to_string()))?;
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, &path)?;
    Ok(())
}
