//! Resolving the MODEL argument: a file path, a `zoo:` spec, a bare zoo name, or nothing (the
//! embedded default).

use anyhow::Result;
use engine::session::Model;

/// The built-in architecture used when no model is given.
pub const DEFAULT_MODEL: &str = "zoo:resnet50";

/// Turns what the user typed into something `Model::load` understands.
pub fn resolve(model: Option<&str>) -> String {
    match model {
        None => DEFAULT_MODEL.to_string(),
        Some(m) if m.starts_with("zoo:") => m.to_string(),
        Some(m) if !std::path::Path::new(m).exists() && is_zoo_name(m) => format!("zoo:{m}"),
        Some(m) => m.to_string(),
    }
}

fn is_zoo_name(name: &str) -> bool {
    let base = name.split(':').next().unwrap_or(name);
    engine::zoo::list().iter().any(|(n, _)| *n == base)
}

pub fn load(model: Option<&str>) -> Result<Model> {
    let spec = resolve(model);
    Ok(Model::load(&spec)?)
}
