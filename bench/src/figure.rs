//! A measured value with its unit: every figure of the report is one (the
//! report's JSON writes each as `{"value", "unit"}`).

use serde::Serialize;

/// One measured value and its unit.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Fig {
    pub value: f64,
    pub unit: &'static str,
}

pub fn fig(value: f64, unit: &'static str) -> Fig {
    Fig { value, unit }
}

/// Seconds as a figure.
pub fn seconds(d: std::time::Duration) -> Fig {
    fig(d.as_secs_f64(), "s")
}
