//! A function's local environment: the template's variables with `Ref`s resolved against
//! the values the stack supplies (table name, parameters, the stack's name), then the
//! stack's overrides.

use std::collections::BTreeMap;

use super::error::{TemplateError, shape};
use super::spec::{EnvValue, LocalValues, StackSpec};

/// What `!Ref AWS::StackName` is locally (`--parameter AWS::StackName=...` overrides it):
/// the metrics' `service` dimension.
pub const LOCAL_STACK_NAME: &str = "deltacast-local";

impl StackSpec {
    /// The environment a function runs with locally: the template's variables resolved
    /// against `local`, then `local.overrides`.
    pub fn environment(
        &self,
        function: &str,
        local: &LocalValues,
    ) -> Result<BTreeMap<String, String>, TemplateError> {
        let spec = self
            .functions
            .get(function)
            .ok_or_else(|| shape(format!("no function {function}")))?;
        let mut resolved = BTreeMap::new();
        for (name, value) in &spec.environment {
            if local.overrides.contains_key(name) {
                continue;
            }
            let text = match value {
                EnvValue::Literal(text) => text.clone(),
                EnvValue::Ref(target) if *target == self.table_logical_id => local.table_name.clone(),
                EnvValue::Ref(target) if target == "AWS::StackName" => local
                    .parameters
                    .get(target)
                    .cloned()
                    .unwrap_or_else(|| LOCAL_STACK_NAME.to_owned()),
                EnvValue::Ref(target) => local
                    .parameters
                    .get(target)
                    .or_else(|| self.parameter_defaults.get(target))
                    .cloned()
                    .ok_or_else(|| {
                        shape(format!(
                            "{function}: {name} refers to {target}, which has no local value; pass one with --parameter {target}=VALUE"
                        ))
                    })?,
                EnvValue::Intrinsic(text) => {
                    return Err(shape(format!(
                        "{function}: {name} is {text}, which the local stack cannot resolve"
                    )));
                }
            };
            resolved.insert(name.clone(), text);
        }
        resolved.extend(local.overrides.clone());
        Ok(resolved)
    }
}
