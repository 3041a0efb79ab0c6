//! What the agent reports and serves: [`health`] (liveness and readiness, shared by the loop
//! and the endpoint), [`metrics`] (Prometheus), [`counters`] (masqueraded packets and bytes as
//! monotonic totals), [`http`] (the endpoint that serves them) and [`jsonlog`] (the JSON log
//! lines). None of them knows the
//! daemon, which feeds them, nor the analysis.

pub mod counters;
pub mod health;
pub mod http;
pub mod jsonlog;
pub mod metrics;
