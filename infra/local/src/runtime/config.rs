//! How to run a function: its binary, environment and limits, and the faults tests may
//! inject. Read by the pool and by every instance, so it sits apart from both.

use std::{collections::BTreeMap, path::PathBuf, time::Duration};

/// How to run a function: its binary, environment and limits.
#[derive(Clone, Debug)]
pub struct FunctionConfig {
    /// The template's logical id, e.g. `MessageFunction`; in logs, the ARN and
    /// `AWS_LAMBDA_FUNCTION_NAME`.
    pub name: String,
    /// The function's executable, e.g. `target/debug/message`.
    pub binary: PathBuf,
    /// The function's environment, already resolved.
    pub env: BTreeMap<String, String>,
    /// How long one invocation may run: from the moment a warm instance accepts it, or a
    /// new instance's process fetches it.
    pub timeout: Duration,
    /// Reported to the function as `AWS_LAMBDA_FUNCTION_MEMORY_SIZE`; not enforced.
    pub memory_mb: u64,
    /// How many instances may exist at once, like reserved concurrency (at least 1).
    pub max_instances: usize,
    /// Fault injection; none by default.
    pub faults: FunctionFaults,
}

/// Faults to inject into a function's invocations.
#[derive(Clone, Debug, Default)]
pub struct FunctionFaults {
    /// Probability (0 to 1) that an instance is killed right after it fetched an event.
    pub crash_rate: f64,
    /// The functions (template logical ids) the faults apply to; empty: every function.
    pub only: Vec<String>,
}

impl FunctionFaults {
    /// The faults function `id` gets: these, or none when `only` leaves it out.
    pub fn for_function(&self, id: &str) -> Self {
        if self.only.is_empty() || self.only.iter().any(|f| f == id) {
            self.clone()
        } else {
            Self::default()
        }
    }
}
