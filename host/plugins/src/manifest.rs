//! `NAME.toml`, the optional manifest next to `NAME.wasm`.
//!
//! ```toml
//! name = "volume-pricing"     # display name; default is the file stem
//! world = "pricing"           # inferred from the component's exports when omitted
//! products = ["prod_abc"]     # pricing only; omitted = every product
//! [limits]                    # all optional; the host's ceilings cap each one
//! timeout_ms = 10
//! fuel = 100000000
//! memory_mib = 64
//! output_bytes = 65536
//! [config]                    # strings; numbers and booleans are passed as text
//! tier_1_quantity = "10"
//! ```

use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::Duration;

use serde::Serialize;

use crate::model::World;

/// Wall-clock budget of one call when the manifest sets none. Generous for a decision
/// (a Rust plugin answers in ~20 µs, Python in ~1 ms) yet short enough that a stuck plugin
/// cannot hold a request.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(10);

/// Fuel (≈ WebAssembly instructions) per call when the manifest sets none: 100 million,
/// roughly 30–100 ms of straight-line work, so the epoch deadline is normally what stops a
/// runaway loop and fuel is the deterministic backstop that also limits a plugin on a
/// slow machine. Interpreted guests (JS, Python) use ~1–5 million per simple call.
pub const DEFAULT_FUEL: u64 = 100_000_000;

/// Linear memory per call when the manifest sets none, in MiB.
pub const DEFAULT_MEMORY_MIB: u32 = 64;

/// The host's ceiling on a call's deadline unless the operator sets another: a decision on
/// the request path never waits longer than a second for a plugin, whatever its manifest
/// asks.
pub const DEFAULT_MAX_TIMEOUT_MS: u64 = 1000;

/// The host's ceiling on a call's fuel unless the operator sets another: 10 billion, more
/// than a second of work, so the deadline is what binds.
pub const DEFAULT_MAX_FUEL: u64 = 10_000_000_000;

/// The host's ceiling on what one call may hand the host (its answer, or one log line or
/// stdout write), in bytes, unless the operator sets another. The largest valid answer (64
/// personalization variables of 4 KiB keys and values) is about 512 KiB.
pub const DEFAULT_MAX_OUTPUT_BYTES: u64 = 1024 * 1024;

/// The smallest output ceiling accepted: a guest's stdout writes come in chunks of up to
/// 64 KiB, and each must fit.
pub const MIN_OUTPUT_BYTES: u64 = 64 * 1024;

/// A value for every world, with overrides for some. Written `1000` (every world),
/// `pricing:50,segmentation:20` (those worlds; the others keep the default) or
/// `1000,pricing:50` (both).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PerWorld<T> {
    /// The value for worlds without an override.
    pub all: T,
    /// Per-world overrides.
    pub worlds: BTreeMap<World, T>,
}

impl<T: Copy + Ord> PerWorld<T> {
    /// `value` for every world.
    pub fn new(value: T) -> Self {
        Self {
            all: value,
            worlds: BTreeMap::new(),
        }
    }

    /// The value for `world`.
    pub fn get(&self, world: World) -> T {
        self.worlds.get(&world).copied().unwrap_or(self.all)
    }

    /// The largest value of any world.
    pub fn max(&self) -> T {
        self.worlds.values().copied().fold(self.all, T::max)
    }

    /// Parses the setting syntax over `default`: a bare value replaces the default for
    /// every world, `world:value` sets one world.
    pub fn parse_over(text: &str, default: T) -> Result<Self, String>
    where
        T: FromStr,
        T::Err: std::fmt::Display,
    {
        let mut out = Self::new(default);
        let mut bare = false;
        for item in text.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let parse = |v: &str| v.trim().parse::<T>().map_err(|e| format!("`{item}`: {e}"));
            match item.split_once(':') {
                Some((world, value)) => {
                    let w = World::parse(world.trim()).ok_or_else(|| {
                        format!(
                            "`{item}`: `{}` is not pricing, segmentation, personalization or campaign-trigger",
                            world.trim()
                        )
                    })?;
                    if out.worlds.insert(w, parse(value)?).is_some() {
                        return Err(format!("`{}` is given twice", w.as_str()));
                    }
                }
                None => {
                    if std::mem::replace(&mut bare, true) {
                        return Err("more than one value for every world".into());
                    }
                    out.all = parse(item)?;
                }
            }
        }
        Ok(out)
    }
}

impl<T: std::fmt::Display> std::fmt::Display for PerWorld<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.all)?;
        for (world, value) in &self.worlds {
            write!(f, ",{}:{value}", world.as_str())?;
        }
        Ok(())
    }
}

/// The operator's ceilings on every plugin's limits, per world. A manifest may ask for
/// less, never more: what it asks beyond a ceiling is cut to the ceiling, with a warning.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Ceilings {
    pub timeout_ms: PerWorld<u64>,
    pub fuel: PerWorld<u64>,
    pub memory_mib: PerWorld<u32>,
    pub output_bytes: PerWorld<u64>,
}

impl Default for Ceilings {
    fn default() -> Self {
        Self {
            timeout_ms: PerWorld::new(DEFAULT_MAX_TIMEOUT_MS),
            fuel: PerWorld::new(DEFAULT_MAX_FUEL),
            memory_mib: PerWorld::new(DEFAULT_MEMORY_MIB),
            output_bytes: PerWorld::new(DEFAULT_MAX_OUTPUT_BYTES),
        }
    }
}

impl Ceilings {
    /// Refuses ceilings no call could run under.
    pub fn validate(&self) -> Result<(), String> {
        let zero = |name: &str, values: Vec<u64>| {
            if values.contains(&0) {
                Err(format!("{name} must be positive for every world"))
            } else {
                Ok(())
            }
        };
        let all = |p: &PerWorld<u64>| {
            std::iter::once(p.all)
                .chain(p.worlds.values().copied())
                .collect::<Vec<_>>()
        };
        zero("the timeout ceiling", all(&self.timeout_ms))?;
        zero("the fuel ceiling", all(&self.fuel))?;
        let memory = std::iter::once(self.memory_mib.all)
            .chain(self.memory_mib.worlds.values().copied())
            .map(u64::from)
            .collect();
        zero("the memory ceiling", memory)?;
        if let Some(small) = all(&self.output_bytes)
            .into_iter()
            .find(|&b| b < MIN_OUTPUT_BYTES)
        {
            return Err(format!(
                "the output ceiling {small} is below {MIN_OUTPUT_BYTES} bytes (a guest's stdout writes come in 64 KiB chunks)"
            ));
        }
        Ok(())
    }
}

/// A parsed manifest. `Manifest::default()` is what a plugin without a `.toml` gets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Manifest {
    /// Display name; `None` means "use the file stem".
    pub name: Option<String>,
    /// The world the plugin claims; `None` means "infer from its exports".
    pub world: Option<World>,
    /// Products a pricing plugin serves; `None` means every product.
    pub products: Option<Vec<String>>,
    pub limits: Limits,
    /// The `[config]` table in file order, values as text.
    pub config: Vec<(String, String)>,
}

/// Per-call limits; `None` fields take the host defaults.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    pub timeout_ms: Option<u64>,
    pub fuel: Option<u64>,
    pub memory_mib: Option<u32>,
    pub output_bytes: Option<u64>,
}

/// Limits with every default filled in and every ceiling applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct EffectiveLimits {
    #[serde(rename = "timeout_ms", serialize_with = "millis")]
    pub timeout: Duration,
    pub fuel: u64,
    pub memory_bytes: usize,
    pub output_bytes: usize,
}

fn millis<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Limits a plugin runs under, and what its manifest asked for beyond the host's ceilings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub limits: EffectiveLimits,
    /// One sentence per limit that was cut to its ceiling.
    pub warnings: Vec<String>,
}

impl Limits {
    /// Fills in defaults and cuts anything above `world`'s ceilings down to them, saying
    /// so. Only values no call could run under (zero) are errors.
    pub fn resolve(&self, world: World, ceilings: &Ceilings) -> Result<Resolved, ManifestError> {
        let mut warnings = Vec::new();
        let mut clamp = |key: &str,
                         asked: Option<u64>,
                         default: u64,
                         ceiling: u64,
                         setting: &str| {
            match asked {
                Some(0) => Err(ManifestError::Invalid(format!(
                    "limits.{key} must be positive"
                ))),
                Some(asked) if asked > ceiling => {
                    warnings.push(format!(
                        "limits.{key} = {asked} is above the host's ceiling for {world} plugins; {ceiling} applies ({setting})"
                    ));
                    Ok(ceiling)
                }
                Some(asked) => Ok(asked),
                None => Ok(default.min(ceiling)),
            }
        };
        let timeout_ms = clamp(
            "timeout_ms",
            self.timeout_ms,
            DEFAULT_TIMEOUT.as_millis() as u64,
            ceilings.timeout_ms.get(world),
            "HEPHAESTUS_PLUGIN_MAX_TIMEOUT_MS",
        )?;
        let fuel = clamp(
            "fuel",
            self.fuel,
            DEFAULT_FUEL,
            ceilings.fuel.get(world),
            "HEPHAESTUS_PLUGIN_MAX_FUEL",
        )?;
        let memory_mib = clamp(
            "memory_mib",
            self.memory_mib.map(u64::from),
            u64::from(DEFAULT_MEMORY_MIB),
            u64::from(ceilings.memory_mib.get(world)),
            "HEPHAESTUS_PLUGIN_MAX_MEMORY_MIB",
        )?;
        let output_bytes = clamp(
            "output_bytes",
            self.output_bytes,
            DEFAULT_MAX_OUTPUT_BYTES,
            ceilings.output_bytes.get(world),
            "HEPHAESTUS_PLUGIN_MAX_OUTPUT_BYTES",
        )?;
        Ok(Resolved {
            limits: EffectiveLimits {
                timeout: Duration::from_millis(timeout_ms),
                fuel,
                memory_bytes: usize::try_from(memory_mib << 20).unwrap_or(usize::MAX),
                output_bytes: usize::try_from(output_bytes).unwrap_or(usize::MAX),
            },
            warnings,
        })
    }
}

/// Why a manifest was rejected, in words an author can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error("manifest is not valid TOML: {0}")]
    Syntax(String),
    #[error("manifest: {0}")]
    Invalid(String),
}

impl Manifest {
    /// Parses manifest text. Unknown keys are rejected so a typo (`timeout = 5`) does not
    /// silently leave the default in force.
    pub fn parse(text: &str) -> Result<Manifest, ManifestError> {
        let table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| ManifestError::Syntax(e.message().to_owned()))?;
        let mut manifest = Manifest::default();
        for (key, value) in table {
            match key.as_str() {
                "name" => manifest.name = Some(string(&key, value)?),
                "world" => {
                    let name = string(&key, value)?;
                    manifest.world = Some(World::parse(&name).ok_or_else(|| {
                        ManifestError::Invalid(format!(
                            "world = {name:?} is not one of pricing, segmentation, personalization, campaign-trigger"
                        ))
                    })?);
                }
                "products" => {
                    let toml::Value::Array(items) = value else {
                        return Err(invalid_type("products", "an array of product ids"));
                    };
                    let products = items
                        .into_iter()
                        .map(|v| string("products[]", v))
                        .collect::<Result<Vec<_>, _>>()?;
                    manifest.products = Some(products);
                }
                "limits" => manifest.limits = limits(value)?,
                "config" => {
                    let toml::Value::Table(config) = value else {
                        return Err(invalid_type("config", "a table"));
                    };
                    for (k, v) in config {
                        let text = match v {
                            toml::Value::String(s) => s,
                            toml::Value::Integer(i) => i.to_string(),
                            toml::Value::Float(f) => f.to_string(),
                            toml::Value::Boolean(b) => b.to_string(),
                            _ => {
                                return Err(invalid_type(
                                    &format!("config.{k}"),
                                    "a string, number or boolean",
                                ));
                            }
                        };
                        manifest.config.push((k, text));
                    }
                }
                other => {
                    return Err(ManifestError::Invalid(format!(
                        "unknown key `{other}` (expected name, world, products, [limits], [config])"
                    )));
                }
            }
        }
        if manifest.products.is_some() && manifest.world.is_some_and(|w| w != World::Pricing) {
            return Err(ManifestError::Invalid(
                "`products` only applies to pricing plugins".into(),
            ));
        }
        Ok(manifest)
    }
}

fn limits(value: toml::Value) -> Result<Limits, ManifestError> {
    let toml::Value::Table(table) = value else {
        return Err(invalid_type("limits", "a table"));
    };
    let mut limits = Limits::default();
    for (key, value) in table {
        let toml::Value::Integer(n) = value else {
            return Err(invalid_type(&format!("limits.{key}"), "a positive integer"));
        };
        let n = u64::try_from(n)
            .map_err(|_| ManifestError::Invalid(format!("limits.{key} must not be negative")))?;
        match key.as_str() {
            "timeout_ms" => limits.timeout_ms = Some(n),
            "fuel" => limits.fuel = Some(n),
            "output_bytes" => limits.output_bytes = Some(n),
            "memory_mib" => {
                limits.memory_mib = Some(u32::try_from(n).map_err(|_| {
                    ManifestError::Invalid(format!("limits.memory_mib = {n} is too large"))
                })?)
            }
            other => {
                return Err(ManifestError::Invalid(format!(
                    "unknown key `limits.{other}` (expected timeout_ms, fuel, memory_mib, output_bytes)"
                )));
            }
        }
    }
    Ok(limits)
}

fn string(key: &str, value: toml::Value) -> Result<String, ManifestError> {
    match value {
        toml::Value::String(s) => Ok(s),
        _ => Err(invalid_type(key, "a string")),
    }
}

fn invalid_type(key: &str, expected: &str) -> ManifestError {
    ManifestError::Invalid(format!("`{key}` must be {expected}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(m: &Manifest) -> Resolved {
        m.limits
            .resolve(World::Pricing, &Ceilings::default())
            .unwrap()
    }

    #[test]
    fn parses_the_documented_example_keeping_config_order() {
        let m = Manifest::parse(
            r#"
            name = "volume-pricing"
            world = "pricing"
            products = ["prod_abc"]
            [limits]
            timeout_ms = 5
            fuel = 1000
            memory_mib = 16
            output_bytes = 70000
            [config]
            zeta = "1"
            alpha = 10
            beta = true
            "#,
        )
        .unwrap();
        assert_eq!(m.name.as_deref(), Some("volume-pricing"));
        assert_eq!(m.world, Some(World::Pricing));
        assert_eq!(m.products, Some(vec!["prod_abc".to_owned()]));
        assert_eq!(
            m.config,
            vec![
                ("zeta".into(), "1".into()),
                ("alpha".into(), "10".into()),
                ("beta".into(), "true".into())
            ]
        );
        let resolved = resolve(&m);
        assert!(resolved.warnings.is_empty(), "{resolved:?}");
        let limits = resolved.limits;
        assert_eq!(limits.timeout, Duration::from_millis(5));
        assert_eq!(limits.fuel, 1000);
        assert_eq!(limits.memory_bytes, 16 << 20);
        assert_eq!(limits.output_bytes, 70000);
    }

    #[test]
    fn an_empty_manifest_gets_the_defaults() {
        let limits = resolve(&Manifest::parse("").unwrap()).limits;
        assert_eq!(limits.timeout, DEFAULT_TIMEOUT);
        assert_eq!(limits.fuel, DEFAULT_FUEL);
        assert_eq!(limits.memory_bytes, 64 << 20);
        assert_eq!(limits.output_bytes, DEFAULT_MAX_OUTPUT_BYTES as usize);
    }

    #[test]
    fn a_manifest_asking_above_the_ceilings_is_cut_to_them_with_a_warning_each() {
        let m = Manifest::parse(
            "[limits]\ntimeout_ms = 60000\nfuel = 1000000000000000000\nmemory_mib = 128\noutput_bytes = 100000000",
        )
        .unwrap();
        let mut ceilings = Ceilings {
            timeout_ms: PerWorld::parse_over("500,pricing:50", 1000).unwrap(),
            ..Ceilings::default()
        };
        let r = m.limits.resolve(World::Pricing, &ceilings).unwrap();
        assert_eq!(r.limits.timeout, Duration::from_millis(50));
        assert_eq!(r.limits.fuel, DEFAULT_MAX_FUEL);
        assert_eq!(r.limits.memory_bytes, 64 << 20);
        assert_eq!(r.limits.output_bytes, DEFAULT_MAX_OUTPUT_BYTES as usize);
        assert_eq!(r.warnings.len(), 4, "{:?}", r.warnings);
        assert!(
            r.warnings[0].contains("limits.timeout_ms = 60000")
                && r.warnings[0].contains("50 applies")
                && r.warnings[0].contains("HEPHAESTUS_PLUGIN_MAX_TIMEOUT_MS"),
            "{:?}",
            r.warnings
        );
        // Another world gets the bare value; defaults never exceed a ceiling silently.
        let r = m.limits.resolve(World::Segmentation, &ceilings).unwrap();
        assert_eq!(r.limits.timeout, Duration::from_millis(500));
        let low = Manifest::parse("").unwrap();
        let r = low.limits.resolve(World::Pricing, &ceilings).unwrap();
        assert_eq!(r.limits.timeout, DEFAULT_TIMEOUT);
        assert!(r.warnings.is_empty());
        ceilings.timeout_ms = PerWorld::new(3);
        let r = low.limits.resolve(World::Pricing, &ceilings).unwrap();
        assert_eq!(r.limits.timeout, Duration::from_millis(3));
        assert!(r.warnings.is_empty(), "a default is not the manifest's ask");
    }

    #[test]
    fn per_world_settings_parse_and_print() {
        let p = PerWorld::parse_over("pricing:50, segmentation:20", 1000u64).unwrap();
        assert_eq!(p.get(World::Pricing), 50);
        assert_eq!(p.get(World::Segmentation), 20);
        assert_eq!(p.get(World::CampaignTrigger), 1000);
        assert_eq!(p.max(), 1000);
        assert_eq!(p.to_string(), "1000,pricing:50,segmentation:20");
        let p = PerWorld::parse_over("10,campaign-trigger:30", 1000u64).unwrap();
        assert_eq!((p.get(World::Pricing), p.max()), (10, 30));
        for bad in ["x", "pricer:5", "5,6", "pricing:1,pricing:2", "pricing:-1"] {
            assert!(PerWorld::parse_over(bad, 1u64).is_err(), "{bad}");
        }
        let mut c = Ceilings::default();
        assert!(c.validate().is_ok());
        c.output_bytes = PerWorld::parse_over("pricing:1000", DEFAULT_MAX_OUTPUT_BYTES).unwrap();
        assert!(c.validate().is_err());
        c = Ceilings::default();
        c.timeout_ms = PerWorld::parse_over("0", 1).unwrap();
        assert!(c.validate().is_err());
    }

    #[test]
    fn rejects_typos_bad_worlds_and_zero_limits() {
        let err = Manifest::parse("[limits]\ntimeout = 5").unwrap_err();
        assert!(err.to_string().contains("limits.timeout"), "{err}");
        let err = Manifest::parse("world = \"pricer\"").unwrap_err();
        assert!(err.to_string().contains("not one of"), "{err}");
        let err = Manifest::parse("[limits]\nmemory_mib = 0")
            .unwrap()
            .limits
            .resolve(World::Pricing, &Ceilings::default())
            .unwrap_err();
        assert!(err.to_string().contains("positive"), "{err}");
        let err = Manifest::parse("world = \"segmentation\"\nproducts = []").unwrap_err();
        assert!(err.to_string().contains("only applies"), "{err}");
        assert!(matches!(
            Manifest::parse("name = ").unwrap_err(),
            ManifestError::Syntax(_)
        ));
    }
}
