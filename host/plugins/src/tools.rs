//! Tools for plugin authors, wrapped by the CLI: `check` a file and `call_once` with JSON.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::call::Fault;
use crate::capabilities::config::PluginConfig;
use crate::capabilities::log::LogLine;
use crate::check::{self, CheckError, CheckReport};
use crate::engine::Runtime;
use crate::manifest::{Manifest, ManifestError};
use crate::model::{Request, World};
use crate::registry::execute_once;

/// What one trial call did.
#[derive(Debug, Clone, Serialize)]
pub struct CallReport {
    pub world: World,
    pub function: &'static str,
    /// SHA-256 of the component, hex.
    pub version: String,
    /// The validated answer as JSON (tagged like [`crate::model::Response`]); `None` on a fault.
    pub output: Option<serde_json::Value>,
    /// Why the answer could not be used, if it could not.
    pub fault: Option<Fault>,
    pub fuel_used: u64,
    pub peak_memory: u64,
    #[serde(rename = "duration_us", with = "crate::stats::duration_micros")]
    pub duration: Duration,
    /// Everything the plugin logged or printed (capped like a real call).
    pub log: Vec<LogLine>,
    pub log_lines_dropped: u32,
    /// The limits the call ran under: the manifest's, cut to the host's ceilings.
    pub limits: crate::manifest::EffectiveLimits,
    /// What the manifest asked beyond the host's ceilings.
    pub warnings: Vec<String>,
}

/// Why `call_once` could not call at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ToolError {
    #[error(transparent)]
    Check(#[from] CheckError),
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error(
        "input is not a request: {0} (expected e.g. {{\"quote\": {{...}}}}, {{\"recommend\": ...}}, {{\"segment\": {{\"customer\": ...}}}}, {{\"personalize\": ...}} or {{\"on_event\": {{\"event\": ..., \"customer\": null}}}})"
    )]
    Input(String),
    #[error("the input calls `{function}` of a {needs} plugin, but this is a {world} plugin")]
    WorldMismatch {
        function: &'static str,
        needs: World,
        world: World,
    },
}

pub(crate) fn check(
    runtime: &Runtime,
    bytes: &[u8],
    manifest: &Manifest,
) -> Result<CheckReport, CheckError> {
    let label = manifest.name.as_deref().unwrap_or("check");
    let config = PluginConfig::new(manifest.config.clone());
    Ok(check::check(
        runtime,
        bytes,
        manifest.world,
        label,
        &manifest.limits,
        &config,
    )?
    .report)
}

pub(crate) fn call_once(
    runtime: &Runtime,
    bytes: &[u8],
    world: Option<World>,
    input: serde_json::Value,
    manifest: &Manifest,
) -> Result<CallReport, ToolError> {
    let request: Request =
        serde_json::from_value(input).map_err(|e| ToolError::Input(e.to_string()))?;
    let label = manifest.name.as_deref().unwrap_or("call-once");
    let config = PluginConfig::new(manifest.config.clone());
    let checked = check::check(
        runtime,
        bytes,
        world.or(manifest.world),
        label,
        &manifest.limits,
        &config,
    )?;
    let limits = checked.report.limits;
    if checked.world != request.world() {
        return Err(ToolError::WorldMismatch {
            function: request.function(),
            needs: request.world(),
            world: checked.world,
        });
    }
    let name: Arc<str> = label.into();
    let version: Arc<str> = checked.report.version.clone().into();
    let outcome = execute_once(
        runtime,
        &name,
        &version,
        &checked.pre,
        limits,
        &config,
        &request,
    );
    let (output, fault) = match outcome.result {
        Ok(response) => (serde_json::to_value(response).ok(), None),
        Err(fault) => (None, Some(fault)),
    };
    Ok(CallReport {
        world: checked.world,
        function: request.function(),
        version: checked.report.version,
        output,
        fault,
        fuel_used: outcome.fuel_used,
        peak_memory: outcome.peak_memory,
        duration: outcome.duration,
        log: outcome.log,
        log_lines_dropped: outcome.log_dropped,
        limits,
        warnings: checked.report.warnings,
    })
}
