//! Personalization and campaign-trigger decisions, callable over HTTP: what the
//! personalization slot would do to one campaign message for one customer, and what the
//! campaign-trigger slot asks for in answer to one event of the log. Both decide exactly as
//! campaign sending will (same profile, same plugin, same fallback) and change nothing: an
//! operator or a plugin author sees a plugin's effect before a campaign uses it.

use std::collections::BTreeMap;

use axum::extract::State;
use hephaestus_core::Timestamp;
use hephaestus_core::ids::{self, prefix};
use hephaestus_core::validation::check_text;
use hephaestus_plugins::model::{Attribute, Campaign};
use hephaestus_plugins::{Action, DomainEvent, EventRequest, PersonalizeRequest};
use hephaestus_store::events;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::AppState;
use crate::auth::ReadKey;
use crate::decisions::{DecidedByView, business_now, decide, segmented_profile};
use crate::error::{ApiResult, AppError};
use crate::extract::Json;

/// Template variables one message may carry.
pub(crate) const MAX_VARIABLES: usize = 50;
pub(crate) const MAX_VARIABLE_KEY_CHARS: usize = 40;
pub(crate) const MAX_VARIABLE_VALUE_CHARS: usize = 500;
pub(crate) const MAX_SUBJECT_CHARS: usize = 200;
pub(crate) const MAX_NAME_CHARS: usize = 200;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CampaignBody {
    /// The campaign's id (any text up to 200 characters until campaigns are stored).
    pub id: String,
    pub name: String,
    /// The template the message uses.
    pub template: String,
    /// The template's own subject line, kept unless the plugin gives one.
    pub subject: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PersonalizeBody {
    /// `cus_…`
    pub customer_id: String,
    pub campaign: CampaignBody,
    /// The template's variables for this message, before personalization.
    pub variables: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PersonalizationView {
    /// Always `personalization`.
    pub object: &'static str,
    pub customer_id: String,
    pub campaign_id: String,
    /// The subject the message would go out with: the plugin's, or the campaign's.
    pub subject: String,
    /// Whether the plugin replaced the campaign's subject.
    pub subject_personalized: bool,
    /// The variables the template would be rendered with: the request's, with the
    /// plugin's added (a plugin's value wins over the request's).
    pub variables: BTreeMap<String, String>,
    /// Just what the plugin added or replaced.
    pub plugin_variables: BTreeMap<String, String>,
    /// The customer's segments the decision was made with.
    pub segments: Vec<String>,
    pub decided_by: DecidedByView,
}

fn text(field: &str, value: &str, max: usize) -> ApiResult<()> {
    if value.trim().is_empty() {
        return Err(AppError::invalid(field, "must not be empty"));
    }
    check_text(field, value, max)?;
    Ok(())
}

/// Personalizes one campaign message for one customer with the personalization slot's
/// plugin (or the default, which changes nothing). Nothing is sent or stored.
#[utoipa::path(
    post, path = "/api/v1/plugins/personalize", tag = "decisions",
    request_body = PersonalizeBody,
    responses((status = 200, body = PersonalizationView), (status = 400, body = crate::openapi::ErrorBody)),
    security(("api_key" = ["read"]))
)]
pub async fn personalize(
    State(state): State<AppState>,
    _auth: ReadKey,
    body: Json<PersonalizeBody>,
) -> ApiResult<axum::Json<PersonalizationView>> {
    let body = body.value;
    let c = &body.campaign;
    text("campaign.id", &c.id, MAX_NAME_CHARS)?;
    text("campaign.name", &c.name, MAX_NAME_CHARS)?;
    text("campaign.template", &c.template, MAX_NAME_CHARS)?;
    text("campaign.subject", &c.subject, MAX_SUBJECT_CHARS)?;
    let variables = body.variables.unwrap_or_default();
    if variables.len() > MAX_VARIABLES {
        return Err(AppError::invalid(
            "variables",
            format!("must have at most {MAX_VARIABLES} entries"),
        ));
    }
    for (key, value) in &variables {
        let field = format!("variables.{key}");
        text(&field, key, MAX_VARIABLE_KEY_CHARS)?;
        check_text(&field, value, MAX_VARIABLE_VALUE_CHARS)?;
    }
    let snapshot = crate::customers::live_snapshot(&state, &body.customer_id).await?;
    let (profile, ..) = segmented_profile(&state, &snapshot).await?;
    let segments = profile.segments.clone();
    let campaign = Campaign {
        id: c.id.clone(),
        name: c.name.clone(),
        template: c.template.clone(),
        subject: c.subject.clone(),
    };
    let request = PersonalizeRequest {
        customer: profile,
        campaign,
        variables: variables
            .iter()
            .map(|(k, v)| Attribute::new(k.clone(), v.clone()))
            .collect(),
    };
    let decision = decide(&state, request).await?;
    let plugin_variables: BTreeMap<String, String> = decision
        .value
        .variables
        .iter()
        .map(|a| (a.key.clone(), a.value.clone()))
        .collect();
    let mut merged = variables;
    merged.extend(plugin_variables.clone());
    Ok(axum::Json(PersonalizationView {
        object: "personalization",
        customer_id: snapshot.customer.id,
        campaign_id: body.campaign.id,
        subject_personalized: decision.value.subject.is_some(),
        subject: decision
            .value
            .subject
            .clone()
            .unwrap_or(body.campaign.subject),
        variables: merged,
        plugin_variables,
        segments,
        decided_by: DecidedByView::of(&decision),
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TriggerBody {
    /// An event of the log (`evt_…`), as exported with a customer or read by consumers.
    pub event_id: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EnqueueView {
    /// Always `enqueue`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub template: String,
    pub customer_id: String,
    pub delay_seconds: u32,
    /// When the message would be due: the event's time plus the delay.
    #[schema(value_type = String, format = DateTime)]
    pub send_at: Timestamp,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TriggerView {
    /// Always `trigger_decision`.
    pub object: &'static str,
    pub event_id: String,
    pub event_type: String,
    /// What the trigger asks for; empty when nothing should be sent.
    pub actions: Vec<EnqueueView>,
    pub decided_by: DecidedByView,
}

/// Asks the campaign-trigger slot what it would do in answer to one event of the log (with
/// the profile of the customer it concerns). Nothing is enqueued: campaign sending acts on
/// these answers.
#[utoipa::path(
    post, path = "/api/v1/plugins/trigger", tag = "decisions",
    request_body = TriggerBody,
    responses((status = 200, body = TriggerView), (status = 400, body = crate::openapi::ErrorBody)),
    security(("api_key" = ["read"]))
)]
pub async fn trigger(
    State(state): State<AppState>,
    _auth: ReadKey,
    body: Json<TriggerBody>,
) -> ApiResult<axum::Json<TriggerView>> {
    let id = body.value.event_id;
    if !ids::is_well_formed(prefix::EVENT, &id) {
        return Err(AppError::invalid(
            "event_id",
            "must be an event id like evt_…",
        ));
    }
    let event = events::get(&state.store, &id)
        .await?
        .ok_or_else(|| AppError::invalid("event_id", format!("no such event: {id}")))?;
    // The profile of a customer who is gone (erased) is not shown to plugins.
    let snapshot = match &event.customer_id {
        Some(cid) => hephaestus_store::profiles::snapshot(&state.store, cid, business_now(&state))
            .await?
            .filter(|s| s.customer.erased_at.is_none()),
        None => None,
    };
    let profile = match &snapshot {
        Some(s) => Some(segmented_profile(&state, s).await?.0),
        None => None,
    };
    let request = EventRequest {
        event: DomainEvent {
            id: event.id.clone(),
            kind: event.kind.clone(),
            occurred_at: event.occurred_at.as_micros(),
            customer_id: event.customer_id.clone(),
            subject_id: event.subject_id.clone(),
            data: event.data.to_string(),
        },
        customer: profile,
    };
    let decision = decide(&state, request).await?;
    let actions = decision
        .value
        .iter()
        .map(|action| match action {
            Action::Enqueue(e) => EnqueueView {
                kind: "enqueue",
                template: e.template.clone(),
                customer_id: e.customer_id.clone(),
                delay_seconds: e.delay_seconds,
                send_at: event.occurred_at.add_secs(i64::from(e.delay_seconds)),
            },
        })
        .collect();
    Ok(axum::Json(TriggerView {
        object: "trigger_decision",
        event_id: event.id,
        event_type: event.kind,
        actions,
        decided_by: DecidedByView::of(&decision),
    }))
}
