//! The `/metrics` page as the stack serves it: the registry the functions' EMF lines go
//! to, joined at scrape time with the local runtime's own figures per function. The
//! figures come through a closure the stack provides, so this module needs nothing of
//! the runtime's; the traffic summary reads the same two sources.

use std::fmt;
use std::sync::Arc;

use super::exposition::render;
use super::figures::FunctionFigures;
use super::registry::Registry;
use super::traffic::TrafficSnapshot;

/// Reads the runtime's figures, by function, at the moment it is called.
type FiguresSource = dyn Fn() -> Vec<(String, FunctionFigures)> + Send + Sync;

/// The stack's metrics: its registry and the runtime's figures. Clones share both.
#[derive(Clone)]
pub struct MetricsPage {
    registry: Arc<Registry>,
    functions: Arc<FiguresSource>,
}

impl MetricsPage {
    /// A page for `registry`, with the figures `functions` reads when asked.
    pub fn new(
        registry: Arc<Registry>,
        functions: impl Fn() -> Vec<(String, FunctionFigures)> + Send + Sync + 'static,
    ) -> Self {
        Self {
            registry,
            functions: Arc::new(functions),
        }
    }

    /// The registry the functions' EMF lines go to.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// The runtime's figures now, by function.
    pub fn functions(&self) -> Vec<(String, FunctionFigures)> {
        (self.functions)()
    }

    /// The page's text, Prometheus's format 0.0.4 (see [`super::CONTENT_TYPE`]).
    pub fn render(&self) -> String {
        render(&self.registry.snapshot(), &self.functions())
    }

    /// What the traffic summary compares: the metrics and the figures now.
    pub fn snapshot(&self) -> TrafficSnapshot {
        TrafficSnapshot {
            metrics: self.registry.snapshot(),
            functions: self.functions(),
        }
    }
}

impl fmt::Debug for MetricsPage {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("MetricsPage")
            .field("registry", &self.registry)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::PUBLISHES_LINE;
    use super::*;

    #[test]
    fn the_page_joins_the_registry_with_the_figures_read_at_render_time() {
        let registry = Arc::new(Registry::new());
        let calls = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counted = calls.clone();
        let page = MetricsPage::new(registry.clone(), move || {
            let invocations = counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
            vec![(
                "MessageFunction".to_owned(),
                FunctionFigures {
                    invocations,
                    ..FunctionFigures::default()
                },
            )]
        });
        registry.capture(PUBLISHES_LINE);

        let text = page.render();
        assert!(text.contains(
            r#"deltacast_publishes_total{function="message",outcome="ok",service="deltacast"} 3"#
        ));
        assert!(
            text.contains(r#"deltacast_local_invocations_total{function="MessageFunction"} 1"#)
        );
        let snapshot = page.clone().snapshot();
        assert_eq!(snapshot.functions[0].1.invocations, 2, "read again");
        assert_eq!(snapshot.metrics.counter("Publishes", &[]), 3.0);
    }
}
