//! Is this file a plugin, and of which world? Answered in plain words for authors (the CLI's
//! `plugin check`) and used by every load, so the registry and the CLI agree.

use std::time::Duration;

use serde::Serialize;
use wasmtime::component::types::ComponentItem;

use std::sync::Arc;

use crate::cache::{Origin, content_hash};
use crate::call::{self, CallTarget};
use crate::capabilities::config::PluginConfig;
use crate::engine::Runtime;
use crate::manifest::{EffectiveLimits, Limits};
use crate::model::World;
use crate::v0_1_0::{self, TypedPre};
use crate::warm;

/// WASI packages linked from `wasmtime_wasi::p2` (all at 0.2.x). Their capabilities are
/// empty (no folders, sockets or environment), but a guest may import them.
const GRANTED_WASI: &[&str] = &[
    "wasi:io",
    "wasi:clocks",
    "wasi:random",
    "wasi:cli",
    "wasi:filesystem",
    "wasi:sockets",
];

/// Minimum deadline of the instantiation done at load time.
const LOAD_DEADLINE: std::time::Duration = std::time::Duration::from_secs(1);

/// What `check` found in a valid plugin.
#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    pub world: World,
    /// SHA-256 of the file, hex: the plugin's version.
    pub version: String,
    pub size_bytes: usize,
    /// Everything the component imports (all granted).
    pub imports: Vec<String>,
    /// Everything the component exports.
    pub exports: Vec<String>,
    /// Compile (or cache load) time.
    #[serde(with = "crate::stats::duration_micros")]
    pub compile_time: Duration,
    pub from_cache: bool,
    /// How long one instantiation took at load (the start code included): what a call
    /// pays before the plugin runs, unless an instance was made ahead of it.
    #[serde(with = "crate::stats::duration_micros")]
    pub start_time: Duration,
    /// The limits each call runs under: the manifest's, cut to the host's ceilings.
    pub limits: EffectiveLimits,
    /// What the manifest asked beyond the host's ceilings, one sentence each.
    pub warnings: Vec<String>,
}

/// Why a file is not a usable plugin. `Display` is the explanation an author reads.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckError {
    #[error("not WebAssembly (the file does not start with the `\\0asm` header)")]
    NotWasm,
    #[error(
        "this is a core WebAssembly module, not a component (build for wasm32-wasip2 or run `wasm-tools component new`)"
    )]
    CoreModule,
    #[error("not a valid WebAssembly component: {0}")]
    Invalid(String),
    #[error(
        "built against {found}, this host supports hephaestus:plugins@{}",
        v0_1_0::VERSION
    )]
    UnsupportedVersion { found: String },
    #[error("imports `{0}`, which the host does not grant")]
    UngrantedImport(String),
    #[error("imports something this host cannot provide: {0}")]
    Unlinkable(String),
    #[error(
        "exports none of the plugin interfaces (pricer, segmenter, personalizer, trigger of hephaestus:plugins@{}); it exports: {}",
        v0_1_0::VERSION,
        list(.exports)
    )]
    NoWorld { exports: Vec<String> },
    #[error("exports the interfaces of several worlds ({}); set `world` in the manifest", list(.0))]
    AmbiguousWorld(Vec<String>),
    #[error("missing export {interface} (needed by world `{world}`); it exports: {}", list(.exports))]
    MissingExport {
        world: World,
        interface: String,
        exports: Vec<String>,
    },
    #[error("missing export {interface} function `{function}`")]
    MissingFunction { interface: String, function: String },
    #[error("export {interface} does not match the contract: {detail}")]
    SignatureMismatch { interface: String, detail: String },
    #[error("fails while starting, before any call: {0}")]
    StartFailed(String),
    #[error("{0}")]
    Manifest(String),
}

fn list(items: &[String]) -> String {
    if items.is_empty() {
        "nothing".into()
    } else {
        items.join(", ")
    }
}

/// A component that passed every check, ready to call.
pub(crate) struct Checked {
    pub world: World,
    pub pre: TypedPre,
    pub report: CheckReport,
}

/// Classifies, compiles (through the cache) and inspects `bytes`, then instantiates it
/// once under the manifest's `limits` cut to the host's ceilings for its world.
/// `declared` is the manifest's `world`, if any.
pub(crate) fn check(
    runtime: &Runtime,
    bytes: &[u8],
    declared: Option<World>,
    label: &str,
    limits: &Limits,
    config: &PluginConfig,
) -> Result<Checked, CheckError> {
    // Layer bytes after the version: 0x0001 is a core module, 0x0d00 0x0100 a component.
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err(CheckError::NotWasm);
    }
    if bytes[4..8] == [1, 0, 0, 0] {
        return Err(CheckError::CoreModule);
    }
    let hash = content_hash(bytes);
    let (component, origin, compile_time) = runtime
        .cache
        .load(&runtime.engine, bytes, &hash, label)
        .map_err(|e| CheckError::Invalid(first_line(&e)))?;
    let engine = &runtime.engine;
    let ty = component.component_type();

    let imports: Vec<String> = ty
        .imports(engine)
        .map(|(name, _)| name.to_owned())
        .collect();
    let exports: Vec<String> = ty
        .exports(engine)
        .map(|(name, _)| name.to_owned())
        .collect();
    for name in exports.iter().chain(&imports) {
        unsupported_version(name)?;
    }
    for name in &imports {
        granted(name)?;
    }

    let world = match declared {
        Some(world) => world,
        None => infer_world(&exports)?,
    };
    let resolved = limits
        .resolve(world, &runtime.limits.ceilings)
        .map_err(|e| CheckError::Manifest(e.to_string()))?;
    let interface = v0_1_0::export_name(world);
    let Some(export) = ty.get_export(engine, &interface) else {
        return Err(CheckError::MissingExport {
            world,
            interface,
            exports,
        });
    };
    let ComponentItem::ComponentInstance(instance) = export.ty else {
        return Err(CheckError::SignatureMismatch {
            interface,
            detail: "it is not an interface instance".into(),
        });
    };
    for function in world.export_functions() {
        match instance.get_export(engine, function).map(|e| e.ty) {
            Some(ComponentItem::ComponentFunc(_)) => {}
            Some(_) => {
                return Err(CheckError::SignatureMismatch {
                    interface,
                    detail: format!("`{function}` is not a function"),
                });
            }
            None => {
                return Err(CheckError::MissingFunction {
                    interface,
                    function: (*function).to_owned(),
                });
            }
        }
    }

    let pre = runtime
        .linker
        .instantiate_pre(&component)
        .map_err(|e| CheckError::Unlinkable(first_line(&e)))?;
    let pre = TypedPre::new(world, pre).map_err(|e| CheckError::SignatureMismatch {
        interface: interface.clone(),
        detail: first_line(&e),
    })?;
    let name: Arc<str> = label.into();
    let version: Arc<str> = hash.as_str().into();
    // Starting a large interpreted component takes about a millisecond, but a load must
    // not fail because the machine was briefly busy: the load-time instantiation gets at
    // least a second (fuel still bounds a start function that loops).
    let mut limits = resolved.limits;
    limits.timeout = limits.timeout.max(LOAD_DEADLINE);
    // One instantiation: its start code's lines are capped like any call's.
    let log_budget = Arc::new(crate::capabilities::log::LogBudget::unlimited());
    let target = CallTarget {
        name: &name,
        version: &version,
        pre: &pre,
        limits,
        config,
        log_budget: &log_budget,
    };
    let mut start_time = call::instantiate_once(&runtime.engine, &runtime.clock, &target).map_err(
        |(fault, trapped)| {
            if trapped {
                CheckError::StartFailed(fault.message)
            } else {
                CheckError::SignatureMismatch {
                    interface: interface.clone(),
                    detail: fault.message,
                }
            }
        },
    )?;
    if start_time >= warm::SLOW_START {
        // The first start pays for cold pages and a busy moment; the faster of two says
        // better what each call would pay (and whether the plugin gets a warm pool).
        if let Ok(again) = call::instantiate_once(&runtime.engine, &runtime.clock, &target) {
            start_time = start_time.min(again);
        }
    }
    Ok(Checked {
        world,
        pre,
        report: CheckReport {
            world,
            version: hash,
            size_bytes: bytes.len(),
            imports,
            exports,
            compile_time,
            from_cache: origin == Origin::Cache,
            start_time,
            limits: resolved.limits,
            warnings: resolved.warnings,
        },
    })
}

/// `hephaestus:plugins/x@V` with V outside 0.1.x is another contract version.
fn unsupported_version(name: &str) -> Result<(), CheckError> {
    let Some(rest) = name.strip_prefix(v0_1_0::PACKAGE) else {
        return Ok(());
    };
    let version = rest.rsplit_once('@').map(|(_, v)| v).unwrap_or("");
    let supported_prefix = v0_1_0::VERSION.rsplit_once('.').map_or("", |(p, _)| p);
    if version
        .strip_prefix(supported_prefix)
        .is_some_and(|patch| patch.starts_with('.'))
    {
        return Ok(());
    }
    Err(CheckError::UnsupportedVersion {
        found: format!("{}@{version}", v0_1_0::PACKAGE),
    })
}

fn granted(name: &str) -> Result<(), CheckError> {
    let (path, version) = name.rsplit_once('@').unwrap_or((name, ""));
    let (package, interface) = path.split_once('/').unwrap_or((path, ""));
    let ok = if package == v0_1_0::PACKAGE {
        v0_1_0::GRANTED_INTERFACES.contains(&interface)
    } else {
        GRANTED_WASI.contains(&package) && version.starts_with("0.2.")
    };
    if ok {
        Ok(())
    } else {
        Err(CheckError::UngrantedImport(path.to_owned()))
    }
}

fn infer_world(exports: &[String]) -> Result<World, CheckError> {
    let found: Vec<World> = World::ALL
        .into_iter()
        .filter(|w| exports.contains(&v0_1_0::export_name(*w)))
        .collect();
    match found.as_slice() {
        [world] => Ok(*world),
        [] => Err(CheckError::NoWorld {
            exports: exports.to_vec(),
        }),
        many => Err(CheckError::AmbiguousWorld(
            many.iter().map(|w| w.to_string()).collect(),
        )),
    }
}

/// The error chain on one line ("failed to parse WebAssembly module: unexpected end of
/// file"), without backtraces or wasmtime's multi-line detail, which are for host
/// developers rather than plugin authors.
fn first_line(error: &wasmtime::Error) -> String {
    let text = format!("{error:#}");
    let line = text.lines().next().unwrap_or("").trim();
    crate::call::truncate(line, 300)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn import_names_are_classified() {
        assert!(granted("hephaestus:plugins/log@0.1.0").is_ok());
        assert!(granted("wasi:cli/stdout@0.2.6").is_ok());
        assert!(granted("wasi:io/streams@0.2.0").is_ok());
        assert_eq!(
            granted("wasi:http/outgoing-handler@0.2.0")
                .unwrap_err()
                .to_string(),
            "imports `wasi:http/outgoing-handler`, which the host does not grant"
        );
        assert!(granted("hephaestus:plugins/secrets@0.1.0").is_err());
        assert!(granted("wasi:cli/stdout@0.3.0").is_err());
        assert!(granted("my:own/thing").is_err());
    }

    #[test]
    fn other_contract_versions_are_named() {
        assert!(unsupported_version("hephaestus:plugins/pricer@0.1.0").is_ok());
        assert!(unsupported_version("hephaestus:plugins/pricer@0.1.7").is_ok());
        assert!(unsupported_version("wasi:io/poll@0.2.0").is_ok());
        assert_eq!(
            unsupported_version("hephaestus:plugins/pricer@0.2.0")
                .unwrap_err()
                .to_string(),
            "built against hephaestus:plugins@0.2.0, this host supports hephaestus:plugins@0.1.0"
        );
        assert!(unsupported_version("hephaestus:plugins/log@0.10.0").is_err());
    }

    #[test]
    fn the_world_is_inferred_from_a_single_plugin_export() {
        let names = |n: &[&str]| n.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            infer_world(&names(&["hephaestus:plugins/segmenter@0.1.0"])).unwrap(),
            World::Segmentation
        );
        assert!(matches!(
            infer_world(&names(&["wasi:cli/run@0.2.0"])),
            Err(CheckError::NoWorld { .. })
        ));
        assert!(matches!(
            infer_world(&names(&[
                "hephaestus:plugins/pricer@0.1.0",
                "hephaestus:plugins/trigger@0.1.0"
            ])),
            Err(CheckError::AmbiguousWorld(_))
        ));
    }
}
