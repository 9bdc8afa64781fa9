//! What the sandbox enforces on this host, per layer.

use std::fmt;

/// One isolation layer a plan may `require`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Layer {
    /// Own session and process group; the whole group dies with the step.
    ProcessGroup,
    /// A cleared environment with only the declared variables.
    Env,
    /// A user namespace.
    UserNs,
    /// A mount namespace with a minimal root.
    MountNs,
    /// A pid namespace.
    PidNs,
    /// A network namespace (no egress by default).
    NetNs,
    /// Landlock filesystem and network rules.
    Landlock,
    /// A seccomp filter.
    Seccomp,
    /// cgroup limits (memory, pids, cpu).
    Cgroups,
}

impl Layer {
    /// Every layer, in report order.
    pub const ALL: [Layer; 9] = [
        Layer::ProcessGroup,
        Layer::Env,
        Layer::UserNs,
        Layer::MountNs,
        Layer::PidNs,
        Layer::NetNs,
        Layer::Landlock,
        Layer::Seccomp,
        Layer::Cgroups,
    ];

    /// The name used in plan files (`require = ["userns", ...]`).
    pub fn name(self) -> &'static str {
        match self {
            Layer::ProcessGroup => "process-group",
            Layer::Env => "env",
            Layer::UserNs => "userns",
            Layer::MountNs => "mountns",
            Layer::PidNs => "pidns",
            Layer::NetNs => "netns",
            Layer::Landlock => "landlock",
            Layer::Seccomp => "seccomp",
            Layer::Cgroups => "cgroups",
        }
    }

    /// Parses a plan-file layer name.
    pub fn from_name(name: &str) -> Option<Layer> {
        Layer::ALL.into_iter().find(|l| l.name() == name)
    }
}

impl fmt::Display for Layer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How far a layer is enforced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    /// Enforced as specified.
    Fully,
    /// Enforced in part; the report's detail says what is missing.
    Partially,
    /// Not enforced at all.
    NotEnforced,
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Level::Fully => "fully",
            Level::Partially => "partially",
            Level::NotEnforced => "not enforced",
        })
    }
}

/// One line of a posture report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerReport {
    /// The layer.
    pub layer: Layer,
    /// How far it is enforced.
    pub level: Level,
    /// Why, in a few words.
    pub detail: &'static str,
}

/// What [`spawn`](crate::spawn) enforces on this host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Posture {
    /// One report per layer, in [`Layer::ALL`] order.
    pub layers: Vec<LayerReport>,
}

impl Posture {
    /// The posture of the process backend on this host.
    pub fn current() -> Posture {
        let layers = Layer::ALL
            .into_iter()
            .map(|layer| {
                let (level, detail) = match layer {
                    Layer::ProcessGroup => (
                        Level::Partially,
                        "own session and group, parent-death signal, watchdog; a process that \
                         calls setsid is killed only when the run ends",
                    ),
                    Layer::Env => (Level::Fully, "cleared; only declared variables"),
                    _ => (Level::NotEnforced, "not implemented by the process backend"),
                };
                LayerReport {
                    layer,
                    level,
                    detail,
                }
            })
            .collect();
        Posture { layers }
    }

    /// The level of one layer.
    pub fn level(&self, layer: Layer) -> Level {
        self.layers
            .iter()
            .find(|r| r.layer == layer)
            .map_or(Level::NotEnforced, |r| r.level)
    }

    /// The required layers this posture does not enforce fully.
    pub fn missing<'a>(&self, required: impl IntoIterator<Item = &'a Layer>) -> Vec<Layer> {
        required
            .into_iter()
            .copied()
            .filter(|l| self.level(*l) != Level::Fully)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_names_round_trip() {
        for layer in Layer::ALL {
            assert_eq!(Layer::from_name(layer.name()), Some(layer));
        }
        assert_eq!(Layer::from_name("bogus"), None);
    }

    #[test]
    fn process_backend_reports_namespaces_as_missing() {
        let posture = Posture::current();
        assert_eq!(posture.level(Layer::ProcessGroup), Level::Partially);
        assert_eq!(
            posture.missing(&[Layer::UserNs, Layer::Env, Layer::Landlock]),
            vec![Layer::UserNs, Layer::Landlock]
        );
    }
}
