//! Bindings for `hephaestus:plugins@0.1.0`, the only released WIT version so far.
//!
//! Each WIT version gets a module like this one (the Zed extension-host pattern): the
//! generated bindings, the host side of its imports, and conversions between its records
//! and the version-neutral types in [`crate::model`]. A future `v0_2_0` sits beside it and
//! [`TypedPre`] grows a variant per version, so plugins built against 0.1.0 keep loading.
//!
//! `bindgen!` re-exports types at the root of the module it is expanded in, so every
//! world is expanded in its own submodule; the export worlds reuse the import world's
//! `types`, `log`, `clock` and `config` through `with` so there is one `Money` type.

use wasmtime::Store;
use wasmtime::component::{HasSelf, InstancePre, Linker};

use crate::call::CallState;
use crate::capabilities::log::{LogLevel, LogSource};
use crate::model::{self, Request, Response, World};

/// The package and version this module implements, as it appears in import/export names.
pub const PACKAGE: &str = "hephaestus:plugins";
pub const VERSION: &str = "0.1.0";

mod imports {
    wasmtime::component::bindgen!({
        path: "../../wit/v0.1.0",
        world: "plugin-host",
    });
}

mod pricing {
    wasmtime::component::bindgen!({
        path: "../../wit/v0.1.0",
        world: "pricing",
        with: {
            "hephaestus:plugins/types": super::imports::hephaestus::plugins::types,
            "hephaestus:plugins/log": super::imports::hephaestus::plugins::log,
            "hephaestus:plugins/clock": super::imports::hephaestus::plugins::clock,
            "hephaestus:plugins/config": super::imports::hephaestus::plugins::config,
        },
    });
}

mod segmentation {
    wasmtime::component::bindgen!({
        path: "../../wit/v0.1.0",
        world: "segmentation",
        with: {
            "hephaestus:plugins/types": super::imports::hephaestus::plugins::types,
            "hephaestus:plugins/log": super::imports::hephaestus::plugins::log,
            "hephaestus:plugins/clock": super::imports::hephaestus::plugins::clock,
            "hephaestus:plugins/config": super::imports::hephaestus::plugins::config,
        },
    });
}

mod personalization {
    wasmtime::component::bindgen!({
        path: "../../wit/v0.1.0",
        world: "personalization",
        with: {
            "hephaestus:plugins/types": super::imports::hephaestus::plugins::types,
            "hephaestus:plugins/log": super::imports::hephaestus::plugins::log,
            "hephaestus:plugins/clock": super::imports::hephaestus::plugins::clock,
            "hephaestus:plugins/config": super::imports::hephaestus::plugins::config,
        },
    });
}

mod campaign_trigger {
    wasmtime::component::bindgen!({
        path: "../../wit/v0.1.0",
        world: "campaign-trigger",
        with: {
            "hephaestus:plugins/types": super::imports::hephaestus::plugins::types,
            "hephaestus:plugins/log": super::imports::hephaestus::plugins::log,
            "hephaestus:plugins/clock": super::imports::hephaestus::plugins::clock,
            "hephaestus:plugins/config": super::imports::hephaestus::plugins::config,
        },
    });
}

use campaign_trigger::exports::hephaestus::plugins::trigger;
use imports::hephaestus::plugins::{clock, config, log, types as wit};
use personalization::exports::hephaestus::plugins::personalizer;
use pricing::exports::hephaestus::plugins::pricer;

/// Adds this version's imports (`log`, `clock`, `config`) to the linker.
pub fn add_to_linker(linker: &mut Linker<CallState>) -> wasmtime::Result<()> {
    imports::PluginHost::add_to_linker::<CallState, HasSelf<CallState>>(linker, |s| s)
}

/// The interfaces of this package a plugin may import.
pub const GRANTED_INTERFACES: [&str; 4] = ["types", "log", "clock", "config"];

/// The full name of the interface a world exports, e.g. `hephaestus:plugins/pricer@0.1.0`.
pub fn export_name(world: World) -> String {
    format!("{PACKAGE}/{}@{VERSION}", world.export_interface())
}

impl wit::Host for CallState {}

impl log::Host for CallState {
    fn write(&mut self, level: log::Level, message: String) {
        let level = match level {
            log::Level::Trace => LogLevel::Trace,
            log::Level::Debug => LogLevel::Debug,
            log::Level::Info => LogLevel::Info,
            log::Level::Warn => LogLevel::Warn,
            log::Level::Error => LogLevel::Error,
        };
        self.log.write(level, LogSource::Log, message);
    }
}

impl clock::Host for CallState {
    fn now(&mut self) -> wit::Timestamp {
        (self.clock)()
    }
}

impl config::Host for CallState {
    fn get(&mut self, key: String) -> Option<String> {
        self.config.get(&key)
    }

    fn all(&mut self) -> Vec<(String, String)> {
        self.config.all()
    }
}

/// A pre-instantiated component with its exports looked up and type-checked.
pub enum TypedPre {
    Pricing(pricing::PricingPre<CallState>),
    Segmentation(segmentation::SegmentationPre<CallState>),
    Personalization(personalization::PersonalizationPre<CallState>),
    CampaignTrigger(campaign_trigger::CampaignTriggerPre<CallState>),
}

impl std::fmt::Debug for TypedPre {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("TypedPre").field(&self.world()).finish()
    }
}

impl TypedPre {
    /// Checks that the component's exports have exactly the types `world` expects.
    pub fn new(world: World, pre: InstancePre<CallState>) -> wasmtime::Result<Self> {
        Ok(match world {
            World::Pricing => TypedPre::Pricing(pricing::PricingPre::new(pre)?),
            World::Segmentation => TypedPre::Segmentation(segmentation::SegmentationPre::new(pre)?),
            World::Personalization => {
                TypedPre::Personalization(personalization::PersonalizationPre::new(pre)?)
            }
            World::CampaignTrigger => {
                TypedPre::CampaignTrigger(campaign_trigger::CampaignTriggerPre::new(pre)?)
            }
        })
    }

    pub fn world(&self) -> World {
        match self {
            TypedPre::Pricing(_) => World::Pricing,
            TypedPre::Segmentation(_) => World::Segmentation,
            TypedPre::Personalization(_) => World::Personalization,
            TypedPre::CampaignTrigger(_) => World::CampaignTrigger,
        }
    }

    /// Makes a fresh instance in `store`, running the component's start code. The
    /// generated `*Pre::new` only finds the exported interface; its functions' types are
    /// checked here, so the loader instantiates once to turn a signature mismatch (or a
    /// component that traps while starting) into a load error instead of a fault on
    /// every call.
    pub fn instantiate(&self, store: &mut Store<CallState>) -> wasmtime::Result<TypedInstance> {
        Ok(match self {
            TypedPre::Pricing(pre) => TypedInstance::Pricing(pre.instantiate(store)?),
            TypedPre::Segmentation(pre) => TypedInstance::Segmentation(pre.instantiate(store)?),
            TypedPre::Personalization(pre) => {
                TypedInstance::Personalization(pre.instantiate(store)?)
            }
            TypedPre::CampaignTrigger(pre) => {
                TypedInstance::CampaignTrigger(pre.instantiate(store)?)
            }
        })
    }
}

/// An instance of one world, made by [`TypedPre::instantiate`] and called at most once.
pub enum TypedInstance {
    Pricing(pricing::Pricing),
    Segmentation(segmentation::Segmentation),
    Personalization(personalization::Personalization),
    CampaignTrigger(campaign_trigger::CampaignTrigger),
}

impl TypedInstance {
    /// Makes one call into the instance living in `store`. The outer error is a trap;
    /// the inner one is the guest's own `Err(..)`.
    pub fn call(
        &self,
        store: &mut Store<CallState>,
        request: &Request,
    ) -> wasmtime::Result<Result<Response, String>> {
        match (self, request) {
            (TypedInstance::Pricing(instance), Request::Quote(r)) => {
                let out = instance
                    .hephaestus_plugins_pricer()
                    .call_quote(&mut *store, &quote_request(r))?;
                Ok(out.map(|q| Response::Quote(quote(q))))
            }
            (TypedInstance::Pricing(instance), Request::Recommend(r)) => {
                let out = instance
                    .hephaestus_plugins_pricer()
                    .call_recommend(&mut *store, &recommend_request(r))?;
                Ok(out.map(|r| Response::Recommend(recommendation(r))))
            }
            (TypedInstance::Segmentation(instance), Request::Segment(r)) => {
                let out = instance
                    .hephaestus_plugins_segmenter()
                    .call_segment(&mut *store, &profile(&r.customer))?;
                Ok(out.map(Response::Segment))
            }
            (TypedInstance::Personalization(instance), Request::Personalize(r)) => {
                let out = instance
                    .hephaestus_plugins_personalizer()
                    .call_personalize(&mut *store, &personalize_request(r))?;
                Ok(out.map(|p| Response::Personalize(personalization(p))))
            }
            (TypedInstance::CampaignTrigger(instance), Request::OnEvent(r)) => {
                let customer = r.customer.as_ref().map(profile);
                let out = instance.hephaestus_plugins_trigger().call_on_event(
                    &mut *store,
                    &event(&r.event),
                    customer.as_ref(),
                )?;
                Ok(out.map(|actions| Response::OnEvent(actions.into_iter().map(action).collect())))
            }
            // Callers route by world before getting here; this is a host bug, reported as
            // a trap-like error rather than a panic.
            (instance, request) => Err(wasmtime::format_err!(
                "a {} plugin cannot answer `{}`",
                instance.world(),
                request.function()
            )),
        }
    }

    pub fn world(&self) -> World {
        match self {
            TypedInstance::Pricing(_) => World::Pricing,
            TypedInstance::Segmentation(_) => World::Segmentation,
            TypedInstance::Personalization(_) => World::Personalization,
            TypedInstance::CampaignTrigger(_) => World::CampaignTrigger,
        }
    }
}

// Conversions. Written out by hand so a WIT change is a compile error here, not a
// silently different JSON shape.

fn money(m: &model::Money) -> wit::Money {
    wit::Money {
        amount_minor: m.amount_minor,
        currency: m.currency.clone(),
    }
}

fn money_out(m: wit::Money) -> model::Money {
    model::Money {
        amount_minor: m.amount_minor,
        currency: m.currency,
    }
}

fn attributes(list: &[model::Attribute]) -> Vec<wit::Attribute> {
    list.iter()
        .map(|a| wit::Attribute {
            key: a.key.clone(),
            value: a.value.clone(),
        })
        .collect()
}

fn attributes_out(list: Vec<wit::Attribute>) -> Vec<model::Attribute> {
    list.into_iter()
        .map(|a| model::Attribute {
            key: a.key,
            value: a.value,
        })
        .collect()
}

fn profile(c: &model::CustomerProfile) -> wit::CustomerProfile {
    let a = &c.activity;
    wit::CustomerProfile {
        id: c.id.clone(),
        name: c.name.clone(),
        email_domain: c.email_domain.clone(),
        created_at: c.created_at,
        segments: c.segments.clone(),
        lifetime_value: money(&c.lifetime_value),
        monthly_recurring_revenue: money(&c.monthly_recurring_revenue),
        activity: wit::Activity {
            payments: a.payments,
            payments_last_30_days: a.payments_last_30_days,
            failed_payments_last_30_days: a.failed_payments_last_30_days,
            last_payment_at: a.last_payment_at,
            active_subscriptions: a.active_subscriptions,
            canceled_subscriptions: a.canceled_subscriptions,
            has_past_due: a.has_past_due,
        },
        attributes: attributes(&c.attributes),
    }
}

fn quote_request(r: &model::QuoteRequest) -> pricer::QuoteRequest {
    pricer::QuoteRequest {
        customer: profile(&r.customer),
        product_id: r.product_id.clone(),
        product_name: r.product_name.clone(),
        price_id: r.price_id.clone(),
        unit_price: money(&r.unit_price),
        quantity: r.quantity,
        interval: r.interval.clone(),
        context: attributes(&r.context),
    }
}

fn quote(q: pricer::PriceQuote) -> model::Quote {
    model::Quote {
        amount: money_out(q.amount),
        discount: money_out(q.discount),
        reason: q.reason,
    }
}

fn recommend_request(r: &model::RecommendRequest) -> pricer::RecommendRequest {
    pricer::RecommendRequest {
        product_id: r.product_id.clone(),
        product_name: r.product_name.clone(),
        current_price: money(&r.current_price),
        customer_segment: r.customer_segment.clone(),
        history: r
            .history
            .iter()
            .map(|p| pricer::PricePoint {
                unit_price: money(&p.unit_price),
                customers: p.customers,
                purchases: p.purchases,
                failed: p.failed,
                revenue: money(&p.revenue),
            })
            .collect(),
    }
}

fn recommendation(r: pricer::Recommendation) -> model::Recommendation {
    model::Recommendation {
        recommended_price: money_out(r.recommended_price),
        revenue_change_basis_points: r.revenue_change_basis_points,
        conversion_change_basis_points: r.conversion_change_basis_points,
        reason: r.reason,
    }
}

fn personalize_request(r: &model::PersonalizeRequest) -> personalizer::PersonalizeRequest {
    personalizer::PersonalizeRequest {
        customer: profile(&r.customer),
        campaign: personalizer::Campaign {
            id: r.campaign.id.clone(),
            name: r.campaign.name.clone(),
            template: r.campaign.template.clone(),
            subject: r.campaign.subject.clone(),
        },
        variables: attributes(&r.variables),
    }
}

fn personalization(p: personalizer::Personalization) -> model::Personalization {
    model::Personalization {
        subject: p.subject,
        variables: attributes_out(p.variables),
    }
}

fn event(e: &model::DomainEvent) -> wit::DomainEvent {
    wit::DomainEvent {
        id: e.id.clone(),
        kind: e.kind.clone(),
        occurred_at: e.occurred_at,
        customer_id: e.customer_id.clone(),
        subject_id: e.subject_id.clone(),
        data: e.data.clone(),
    }
}

fn action(a: trigger::Action) -> model::Action {
    match a {
        trigger::Action::Enqueue(e) => model::Action::Enqueue(model::Enqueue {
            template: e.template,
            customer_id: e.customer_id,
            delay_seconds: e.delay_seconds,
        }),
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    fn wit_files(dir: &Path) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "wit"))
            .collect();
        files.sort();
        files
    }

    /// A released contract never changes: plugins built against it must keep loading. The
    /// host binds 0.1.0 from the frozen copy in `wit/v0.1.0/`; while `wit/` (what guests
    /// build against) still says 0.1.0, it must be that copy byte for byte. Changing the
    /// contract means a new version in `wit/` and a new bindings module beside this one.
    #[test]
    fn the_released_wit_is_frozen() {
        let wit = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../wit");
        let frozen = wit.join("v0.1.0");
        let frozen_files = wit_files(&frozen);
        assert!(!frozen_files.is_empty(), "no WIT in {}", frozen.display());
        for file in &frozen_files {
            let text = std::fs::read_to_string(file).unwrap();
            assert!(
                text.starts_with(&format!("package {}@{};", super::PACKAGE, super::VERSION)),
                "{} is not {}@{}",
                file.display(),
                super::PACKAGE,
                super::VERSION
            );
        }
        let current = wit_files(&wit);
        let says_0_1_0 = current.iter().all(|f| {
            std::fs::read_to_string(f).unwrap().starts_with(&format!(
                "package {}@{};",
                super::PACKAGE,
                super::VERSION
            ))
        });
        if says_0_1_0 {
            let names = |files: &[PathBuf]| -> Vec<_> {
                files
                    .iter()
                    .map(|f| f.file_name().unwrap().to_owned())
                    .collect()
            };
            assert_eq!(names(&current), names(&frozen_files));
            for file in &current {
                assert!(
                    std::fs::read(file).unwrap()
                        == std::fs::read(frozen.join(file.file_name().unwrap())).unwrap(),
                    "{} changed but still says {}: the released contract is frozen; \
                     give the change a new version",
                    file.display(),
                    super::VERSION
                );
            }
        }
    }
}
