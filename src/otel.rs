//! OpenTelemetry spans of a run, exported over OTLP/HTTP when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set, and
//! nothing otherwise.
//!
//! The spans are built after the run from what it observed (each with its real start and
//! end times): `ci-intel run` → one `step` span per step that started → that step's last
//! attempt's phases (`cache.lookup`, `sandbox.setup`, `execute`, `cache.upload`). A
//! `TRACEPARENT` in the environment (the W3C trace context, as a CI system or a wrapping
//! tool passes it) makes the run span its child, so the run stitches into the caller's
//! trace. The exporter is the SDK's OTLP/HTTP protobuf exporter over the blocking ureq
//! client the project already has.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, SystemTime};

use ci_intel_executor::CacheEvent;
use ci_intel_scheduler::{RunReport, StepState};
use opentelemetry::propagation::TextMapPropagator as _;
use opentelemetry::trace::{Span as _, SpanKind, Status, TraceContextExt as _, Tracer as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::WithHttpConfig as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;

/// Whether spans are exported: an OTLP endpoint is configured.
pub(crate) fn enabled() -> bool {
    [
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
    ]
    .iter()
    .any(|k| std::env::var_os(k).is_some_and(|v| !v.is_empty()))
        && std::env::var("OTEL_SDK_DISABLED").map_or(true, |v| !v.eq_ignore_ascii_case("true"))
}

/// A valid W3C `traceparent` from the environment's `TRACEPARENT`.
pub(crate) fn incoming_traceparent() -> Option<String> {
    let v = std::env::var("TRACEPARENT").ok()?;
    valid_traceparent(v.trim()).then(|| v.trim().to_ascii_lowercase())
}

/// `00-<32 hex, not all zero>-<16 hex, not all zero>-<2 hex>`.
fn valid_traceparent(v: &str) -> bool {
    let parts: Vec<&str> = v.split('-').collect();
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    parts.len() == 4
        && parts[0] == "00"
        && hex(parts[1], 32)
        && parts[1].bytes().any(|b| b != b'0')
        && hex(parts[2], 16)
        && parts[2].bytes().any(|b| b != b'0')
        && hex(parts[3], 2)
}

/// What the run span says about the run.
pub(crate) struct RunSpan<'a> {
    pub(crate) plan: &'a str,
    pub(crate) run_id: &'a str,
    pub(crate) started_at: SystemTime,
    pub(crate) status: &'a str,
}

/// Exports the run's spans; returns the run span's `traceparent`. A collector that cannot
/// be reached costs a warning, never the run.
pub(crate) fn export(run: &RunSpan<'_>, report: &RunReport) -> Option<String> {
    let exporter = match opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(UreqClient::new())
        .build()
    {
        Ok(e) => e,
        Err(e) => {
            tracing::warn!("OpenTelemetry spans not exported: {e}");
            return None;
        }
    };
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name("ci-intel")
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .build();
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build();
    let traceparent = record_spans(&provider, run, report);
    if let Err(e) = provider.shutdown() {
        tracing::warn!("OpenTelemetry spans not exported: {e}");
    }
    Some(traceparent)
}

/// Builds the spans on `provider`; returns the run span's `traceparent`.
fn record_spans(provider: &SdkTracerProvider, run: &RunSpan<'_>, report: &RunReport) -> String {
    use opentelemetry::trace::TracerProvider as _;
    let tracer = provider.tracer("ci-intel");
    let parent = incoming_traceparent().map_or_else(Context::new, |tp| {
        let carrier = HashMap::from([("traceparent".to_string(), tp)]);
        TraceContextPropagator::new().extract(&carrier)
    });
    let ended = run.started_at + report.wall;
    let mut run_span = tracer
        .span_builder("ci-intel run")
        .with_kind(SpanKind::Internal)
        .with_start_time(run.started_at)
        .with_attributes([
            KeyValue::new("ci_intel.plan", run.plan.to_string()),
            KeyValue::new("ci_intel.run_id", run.run_id.to_string()),
            KeyValue::new("ci_intel.status", run.status.to_string()),
            KeyValue::new("ci_intel.steps", report.results.len() as i64),
        ])
        .start_with_context(&tracer, &parent);
    if run.status != "success" {
        run_span.set_status(Status::error(format!("run {}", run.status)));
    }
    let sc = run_span.span_context().clone();
    let traceparent = format!(
        "00-{}-{}-{:02x}",
        sc.trace_id(),
        sc.span_id(),
        sc.trace_flags().to_u8()
    );
    let run_cx = parent.with_span(run_span);
    for r in &report.results {
        let Some(o) = r.outcome.as_ref().filter(|_| r.attempts > 0) else {
            continue;
        };
        // The first attempt's start: the last one's end less all attempts' time.
        let last_end = o.started_at + o.duration;
        let first_start = last_end.checked_sub(r.duration).unwrap_or(o.started_at);
        let cache = match o.cache_events.last() {
            Some(CacheEvent::Hit { .. }) => "hit",
            Some(CacheEvent::Miss) => "miss",
            Some(CacheEvent::Quarantine { .. }) => "quarantine",
            Some(CacheEvent::Uncacheable { .. }) | None => "uncacheable",
        };
        let mut attrs = vec![
            KeyValue::new("ci_intel.step.id", r.id.clone()),
            KeyValue::new("ci_intel.step.state", r.state.label().to_string()),
            KeyValue::new("ci_intel.cache.result", cache),
            KeyValue::new("ci_intel.attempt", i64::from(r.attempts)),
            KeyValue::new("ci_intel.sandboxed", o.sandboxed),
        ];
        if let Some(k) = &o.action_key {
            attrs.push(KeyValue::new("ci_intel.action_key", k.clone()));
        }
        if let Some(c) = o.exit_code {
            attrs.push(KeyValue::new("process.exit.code", i64::from(c)));
        }
        let mut step = tracer
            .span_builder(format!("step {}", r.id))
            .with_start_time(first_start)
            .with_attributes(attrs)
            .start_with_context(&tracer, &run_cx);
        if !r.state.is_ok() || matches!(r.state, StepState::AllowedFailure) {
            step.set_status(Status::error(
                o.message.clone().unwrap_or_else(|| r.state.label().into()),
            ));
        }
        let step_cx = run_cx.with_span(step);
        for phase in &o.phases {
            let mut span = tracer
                .span_builder(phase.name)
                .with_start_time(phase.started_at)
                .with_attributes([
                    KeyValue::new("ci_intel.step.id", r.id.clone()),
                    KeyValue::new("ci_intel.attempt", i64::from(r.attempts)),
                ])
                .start_with_context(&tracer, &step_cx);
            span.end_with_timestamp(phase.started_at + phase.duration);
        }
        step_cx.span().end_with_timestamp(last_end);
    }
    run_cx.span().end_with_timestamp(ended);
    traceparent
}

/// The SDK's HTTP client seam, served by ureq (blocking: the batch processor exports from
/// its own thread).
#[derive(Debug)]
struct UreqClient {
    agent: ureq::Agent,
}

impl UreqClient {
    fn new() -> UreqClient {
        let timeout = std::env::var("OTEL_EXPORTER_OTLP_TIMEOUT")
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .map_or(Duration::from_secs(10), Duration::from_millis);
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .http_status_as_error(false)
            .build()
            .new_agent();
        UreqClient { agent }
    }
}

impl HttpClient for UreqClient {
    fn send_bytes<'life0, 'async_trait>(
        &'life0 self,
        request: Request<Bytes>,
    ) -> Pin<Box<dyn Future<Output = Result<Response<Bytes>, HttpError>> + Send + 'async_trait>>
    where
        Self: 'async_trait,
        'life0: 'async_trait,
    {
        Box::pin(async move {
            let (parts, body) = request.into_parts();
            let request = Request::from_parts(parts, body.to_vec());
            let response = self.agent.run(request)?;
            let (parts, mut body) = response.into_parts();
            let bytes = body.with_config().limit(4 * 1024 * 1024).read_to_vec()?;
            Ok(Response::from_parts(parts, Bytes::from(bytes)))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_validation() {
        assert!(valid_traceparent(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        ));
        for bad in [
            "",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
        ] {
            assert!(!valid_traceparent(bad), "{bad}");
        }
    }
}
