//! `NAME.toml`, the optional manifest next to `NAME.wasm`.
//!
//! ```toml
//! name = "volume-pricing"     # display name; default is the file stem
//! world = "pricing"           # inferred from the component's exports when omitted
//! products = ["prod_abc"]     # pricing only; omitted = every product
//! [limits]                    # all optional
//! timeout_ms = 10
//! fuel = 100000000
//! memory_mib = 64
//! [config]                    # strings; numbers and booleans are passed as text
//! tier_1_quantity = "10"
//! ```

use std::time::Duration;

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
}

/// Limits with every default filled in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EffectiveLimits {
    pub timeout: Duration,
    pub fuel: u64,
    pub memory_bytes: usize,
}

impl Limits {
    /// Fills in defaults and checks the memory limit against the host's ceiling.
    pub fn resolve(&self, memory_ceiling_mib: u32) -> Result<EffectiveLimits, ManifestError> {
        let memory_mib = self
            .memory_mib
            .unwrap_or(DEFAULT_MEMORY_MIB.min(memory_ceiling_mib));
        if memory_mib == 0 || memory_mib > memory_ceiling_mib {
            return Err(ManifestError::Invalid(format!(
                "limits.memory_mib = {memory_mib} is outside 1..={memory_ceiling_mib} (the host's ceiling)"
            )));
        }
        let timeout_ms = self
            .timeout_ms
            .unwrap_or(DEFAULT_TIMEOUT.as_millis() as u64);
        if timeout_ms == 0 || timeout_ms > 60_000 {
            return Err(ManifestError::Invalid(format!(
                "limits.timeout_ms = {timeout_ms} is outside 1..=60000"
            )));
        }
        let fuel = self.fuel.unwrap_or(DEFAULT_FUEL);
        if fuel == 0 {
            return Err(ManifestError::Invalid(
                "limits.fuel must be positive".into(),
            ));
        }
        Ok(EffectiveLimits {
            timeout: Duration::from_millis(timeout_ms),
            fuel,
            memory_bytes: memory_mib as usize * 1024 * 1024,
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
            "memory_mib" => {
                limits.memory_mib = Some(u32::try_from(n).map_err(|_| {
                    ManifestError::Invalid(format!("limits.memory_mib = {n} is too large"))
                })?)
            }
            other => {
                return Err(ManifestError::Invalid(format!(
                    "unknown key `limits.{other}` (expected timeout_ms, fuel, memory_mib)"
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
        let limits = m.limits.resolve(64).unwrap();
        assert_eq!(limits.timeout, Duration::from_millis(5));
        assert_eq!(limits.fuel, 1000);
        assert_eq!(limits.memory_bytes, 16 << 20);
    }

    #[test]
    fn an_empty_manifest_gets_the_defaults() {
        let limits = Manifest::parse("").unwrap().limits.resolve(64).unwrap();
        assert_eq!(limits.timeout, DEFAULT_TIMEOUT);
        assert_eq!(limits.fuel, DEFAULT_FUEL);
        assert_eq!(limits.memory_bytes, 64 << 20);
    }

    #[test]
    fn rejects_typos_bad_worlds_and_memory_above_the_ceiling() {
        let err = Manifest::parse("[limits]\ntimeout = 5").unwrap_err();
        assert!(err.to_string().contains("limits.timeout"), "{err}");
        let err = Manifest::parse("world = \"pricer\"").unwrap_err();
        assert!(err.to_string().contains("not one of"), "{err}");
        let err = Manifest::parse("[limits]\nmemory_mib = 128")
            .unwrap()
            .limits
            .resolve(64)
            .unwrap_err();
        assert!(err.to_string().contains("ceiling"), "{err}");
        let err = Manifest::parse("world = \"segmentation\"\nproducts = []").unwrap_err();
        assert!(err.to_string().contains("only applies"), "{err}");
        assert!(matches!(
            Manifest::parse("name = ").unwrap_err(),
            ManifestError::Syntax(_)
        ));
    }
}
