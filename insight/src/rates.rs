//! What a run costs: the configured price, power draw and grid carbon intensity of a
//! runner class. Nothing here has a default: a record carries `cost.usd` and
//! `carbon_g_co2e` only when a rates file says what a minute of that class costs and
//! emits (docs/telemetry.md shows a file and where its figures come from).
//!
//! ```toml
//! # Keys are runner classes (`ci-intel` prints the machine's in `predict report`);
//! # `*` matches any run of characters.
//! [class."cpu4-mem16g-linux-github-hosted"]
//! usd_per_minute = 0.016
//! watts = 60
//! grid_g_co2e_per_kwh = 390
//!
//! [class."*"]
//! usd_per_minute = 0.0
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Rates per runner class.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rates {
    /// Class pattern → rate.
    #[serde(default)]
    pub class: BTreeMap<String, Rate>,
}

/// What a minute of one runner class costs and draws.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rate {
    /// Price per minute of wall time, in US dollars.
    pub usd_per_minute: Option<f64>,
    /// Average power draw of the machine while it runs, in watts.
    pub watts: Option<f64>,
    /// Carbon intensity of the electricity, grams of CO2e per kWh.
    pub grid_g_co2e_per_kwh: Option<f64>,
}

/// Why a rates file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum RatesError {
    /// It could not be read.
    #[error("cannot read rates file {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// It is not a valid rates file.
    #[error("invalid rates file {}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: toml::de::Error,
    },
    /// A figure is negative or not finite.
    #[error("invalid rates file {}: `{class}.{field}` must be a finite number of at least 0", path.display())]
    Value {
        /// The file.
        path: PathBuf,
        /// The class pattern.
        class: String,
        /// The field.
        field: &'static str,
    },
}

/// A run's price and footprint.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Priced {
    /// Dollars.
    pub usd: Option<f64>,
    /// The rate used.
    pub usd_per_minute: Option<f64>,
    /// Kilowatt-hours.
    pub kwh: Option<f64>,
    /// Grams of CO2e.
    pub g_co2e: Option<f64>,
}

impl Rates {
    /// Reads and checks a rates file.
    pub fn load(path: &Path) -> Result<Rates, RatesError> {
        let text = std::fs::read_to_string(path).map_err(|source| RatesError::Read {
            path: path.to_owned(),
            source,
        })?;
        let rates: Rates = toml::from_str(&text).map_err(|source| RatesError::Parse {
            path: path.to_owned(),
            source,
        })?;
        for (class, r) in &rates.class {
            for (field, v) in [
                ("usd_per_minute", r.usd_per_minute),
                ("watts", r.watts),
                ("grid_g_co2e_per_kwh", r.grid_g_co2e_per_kwh),
            ] {
                if v.is_some_and(|v| !v.is_finite() || v < 0.0) {
                    return Err(RatesError::Value {
                        path: path.to_owned(),
                        class: class.clone(),
                        field,
                    });
                }
            }
        }
        Ok(rates)
    }

    /// The rate of `class`: an exact key, else the most specific (longest) pattern that
    /// matches it.
    pub fn of(&self, class: &str) -> Option<&Rate> {
        self.class.get(class).or_else(|| {
            self.class
                .iter()
                .filter(|(pattern, _)| wildcard(pattern, class))
                .max_by_key(|(pattern, _)| pattern.len())
                .map(|(_, r)| r)
        })
    }

    /// Prices `wall_seconds` on `class`.
    pub fn price(&self, class: &str, wall_seconds: f64) -> Priced {
        let Some(rate) = self.of(class) else {
            return Priced::default();
        };
        let minutes = wall_seconds / 60.0;
        let kwh = rate.watts.map(|w| w * wall_seconds / 3600.0 / 1000.0);
        Priced {
            usd: rate.usd_per_minute.map(|r| r * minutes),
            usd_per_minute: rate.usd_per_minute,
            kwh,
            g_co2e: kwh.zip(rate.grid_g_co2e_per_kwh).map(|(k, g)| k * g),
        }
    }
}

/// `*` matches any run of characters; everything else itself.
fn wildcard(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns() {
        assert!(wildcard("*", "anything"));
        assert!(wildcard(
            "cpu*-github-hosted",
            "cpu4-mem16g-linux-github-hosted"
        ));
        assert!(!wildcard("cpu*-github-hosted", "cpu4-mem16g-linux-local"));
        assert!(wildcard("a*b*c", "aXbYc"));
        assert!(!wildcard("a*b*c", "aXc"));
        assert!(wildcard("exact", "exact"));
        assert!(!wildcard("exact", "exactly"));
        assert!(!wildcard("ab*ba", "aba"), "the ends may not overlap");
    }

    #[test]
    fn prices_a_run_from_the_most_specific_rate() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rates.toml");
        std::fs::write(
            &path,
            r#"
[class."*"]
usd_per_minute = 0.5
[class."*-github-hosted"]
usd_per_minute = 0.008
watts = 60
grid_g_co2e_per_kwh = 400
"#,
        )
        .unwrap();
        let rates = Rates::load(&path).unwrap();
        let p = rates.price("cpu2-mem8g-linux-github-hosted", 120.0);
        assert_eq!(p.usd_per_minute, Some(0.008));
        assert!((p.usd.unwrap() - 0.016).abs() < 1e-12);
        assert!((p.kwh.unwrap() - 0.002).abs() < 1e-12);
        assert!((p.g_co2e.unwrap() - 0.8).abs() < 1e-9);
        let local = rates.price("cpu2-mem8g-linux-local", 60.0);
        assert_eq!(local.usd, Some(0.5));
        assert_eq!(local.g_co2e, None, "no watts, no carbon");
        assert_eq!(Rates::default().price("x", 60.0), Priced::default());
    }

    #[test]
    fn refuses_negative_and_unknown_fields() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rates.toml");
        std::fs::write(&path, "[class.x]\nusd_per_minute = -1\n").unwrap();
        let e = Rates::load(&path).unwrap_err().to_string();
        assert!(e.contains("`x.usd_per_minute`"), "{e}");
        std::fs::write(&path, "[class.x]\nusd_per_hour = 1\n").unwrap();
        assert!(matches!(Rates::load(&path), Err(RatesError::Parse { .. })));
    }
}
