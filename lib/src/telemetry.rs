//! JSON logs and OpenTelemetry tracing.
