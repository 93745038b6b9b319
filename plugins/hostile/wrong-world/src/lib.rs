//! Hostile fixture: a valid *segmentation* component (it tags every customer `new`) whose
//! manifest claims `world = "pricing"`.
//!
//! The host must refuse to load it as a pricing plugin (the component does not export
//! `hephaestus:plugins/pricer@0.1.0`) and report the mismatch, not serve it.

use hephaestus_plugin_sdk::CustomerProfile;
use hephaestus_plugin_sdk::segmentation::Guest;

/// The exported plugin.
#[derive(Debug)]
pub struct WrongWorld;

impl Guest for WrongWorld {
    fn segment(_customer: CustomerProfile) -> Result<Vec<String>, String> {
        Ok(vec!["new".to_owned()])
    }
}

hephaestus_plugin_sdk::export_segmentation!(WrongWorld);
