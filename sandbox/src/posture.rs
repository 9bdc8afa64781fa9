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
    pub detail: String,
}

/// What [`spawn`](crate::spawn) enforces on this host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Posture {
    /// One report per layer, in [`Layer::ALL`] order.
    pub layers: Vec<LayerReport>,
}

impl Posture {
    /// What a process started without isolation gets (`sandbox = false`, `--no-sandbox`).
    pub fn process() -> Posture {
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
                    _ => (Level::NotEnforced, "the step runs without the sandbox"),
                };
                LayerReport {
                    layer,
                    level,
                    detail: detail.into(),
                }
            })
            .collect();
        Posture { layers }
    }

    /// What an isolated process ([`Policy::isolate`](crate::Policy::isolate)) gets on this
    /// host. Probes the host (a few short-lived children).
    pub fn isolated() -> Posture {
        Posture::from_host(
            &crate::probe::probe_host(),
            crate::seccomp::Filters::get().is_ok(),
            &crate::cgroup::available(),
        )
    }

    /// The isolated posture given what the host offers: the probes, whether the seccomp
    /// filters build, and the cgroup v1 controllers a sandbox gets (as root).
    pub fn from_host(
        host: &[crate::probe::HostLayer],
        seccomp_builds: bool,
        cgroup_v1: &[&str],
    ) -> Posture {
        let offered = |layer: Layer| host.iter().find(|h| h.layer == layer);
        let layers = Layer::ALL
            .into_iter()
            .map(|layer| {
                let available = offered(layer).is_some_and(|h| h.available);
                let why_not = || {
                    offered(layer).map_or_else(|| "not probed".to_string(), |h| h.detail.clone())
                };
                let (level, detail): (Level, String) = match layer {
                    Layer::ProcessGroup => (
                        Level::Fully,
                        "pid namespace: the whole tree dies with the step; parent-death signal; \
                         watchdog"
                            .into(),
                    ),
                    Layer::Env => (
                        Level::Fully,
                        "cleared; declared variables and the fixed set only".into(),
                    ),
                    Layer::UserNs if available => (
                        Level::Fully,
                        format!(
                            "uid/gid {} inside, no capabilities, no_new_privs",
                            crate::SANDBOX_UID
                        ),
                    ),
                    Layer::MountNs if available => (
                        Level::Fully,
                        "fresh tmpfs root, system dirs and declared paths only, read-only \
                         unless writable"
                            .into(),
                    ),
                    Layer::PidNs if available => {
                        (Level::Fully, "own pid 1; host processes invisible".into())
                    }
                    Layer::NetNs if available => (
                        Level::Fully,
                        "loopback only; egress through the allowlist proxy".into(),
                    ),
                    Layer::Landlock if available => {
                        let abi = crate::landlock::abi();
                        match abi {
                            6.. => (
                                Level::Fully,
                                format!(
                                    "ABI {abi}: files mirror the mounts, TCP to the proxy only, \
                                     signals and abstract sockets scoped"
                                ),
                            ),
                            4 | 5 => (
                                Level::Partially,
                                format!(
                                    "ABI {abi}: files and TCP; signals and abstract sockets \
                                     not scoped (needs ABI 6)"
                                ),
                            ),
                            _ => (
                                Level::Partially,
                                format!("ABI {abi}: files only; TCP not restricted (needs ABI 4)"),
                            ),
                        }
                    }
                    Layer::Seccomp if available && seccomp_builds => (
                        Level::Fully,
                        "denylist: namespaces, mounts, keyring, bpf, io_uring, TIOCSTI, raw and \
                         packet sockets"
                            .into(),
                    ),
                    Layer::Cgroups if !cgroup_v1.is_empty() => {
                        let missing: Vec<&str> = crate::cgroup::CONTROLLERS
                            .into_iter()
                            .filter(|c| !cgroup_v1.contains(c))
                            .chain(["I/O", "disk"])
                            .collect();
                        (
                            Level::Partially,
                            format!(
                                "cgroup v1 {} for the whole step (as root); no {} limit",
                                list(cgroup_v1, "and"),
                                list(&missing, "or")
                            ),
                        )
                    }
                    Layer::Cgroups => (
                        Level::NotEnforced,
                        format!(
                            "{}; processes, files and per-process memory are bounded by rlimits; no \
                             cpu limit",
                            if available {
                                "cgroup limits are not applied yet".to_string()
                            } else {
                                why_not()
                            }
                        ),
                    ),
                    _ => (Level::NotEnforced, why_not()),
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

/// `a`, `a and b`, `a, b and c`, with `conjunction` for `and`.
fn list(items: &[&str], conjunction: &str) -> String {
    match items {
        [] => String::new(),
        [one] => (*one).to_string(),
        [init @ .., last] => format!("{} {conjunction} {last}", init.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::HostLayer;

    fn host(available: bool) -> Vec<HostLayer> {
        crate::probe::PROBED
            .iter()
            .map(|&layer| HostLayer {
                layer,
                available,
                version: None,
                detail: format!("{layer} probe said so"),
                fix: None,
            })
            .collect()
    }

    #[test]
    fn isolated_posture_follows_the_host_and_never_claims_cgroups() {
        let p = Posture::from_host(&host(true), true, &[]);
        for layer in [
            Layer::ProcessGroup,
            Layer::Env,
            Layer::UserNs,
            Layer::MountNs,
            Layer::PidNs,
            Layer::NetNs,
            Layer::Seccomp,
        ] {
            assert_eq!(p.level(layer), Level::Fully, "{layer}");
        }
        assert_eq!(p.level(Layer::Cgroups), Level::NotEnforced);
        let p = Posture::from_host(&host(false), true, &[]);
        assert_eq!(p.missing(&[Layer::UserNs, Layer::Env]), vec![Layer::UserNs]);
        let netns = p.layers.iter().find(|l| l.layer == Layer::NetNs).unwrap();
        assert_eq!(netns.detail, "netns probe said so");
        let p = Posture::from_host(&host(true), false, &["pids"]);
        assert_eq!(p.level(Layer::Seccomp), Level::NotEnforced);
        assert_eq!(p.level(Layer::Cgroups), Level::Partially);
    }

    #[test]
    fn cgroup_detail_names_what_is_and_is_not_bounded() {
        let detail = |v1: &[&str]| {
            let p = Posture::from_host(&host(true), true, v1);
            let r = p.layers.iter().find(|l| l.layer == Layer::Cgroups).unwrap();
            (r.level, r.detail.clone())
        };
        assert_eq!(
            detail(&["pids", "memory", "cpu"]),
            (
                Level::Partially,
                "cgroup v1 pids, memory and cpu for the whole step (as root); no I/O or disk \
                 limit"
                    .to_string()
            )
        );
        assert_eq!(
            detail(&["pids", "memory"]),
            (
                Level::Partially,
                "cgroup v1 pids and memory for the whole step (as root); no cpu, I/O or disk \
                 limit"
                    .to_string()
            )
        );
        let (level, none) = detail(&[]);
        assert_eq!(level, Level::NotEnforced);
        assert!(none.ends_with("bounded by rlimits; no cpu limit"), "{none}");
    }

    #[test]
    fn layer_names_round_trip() {
        for layer in Layer::ALL {
            assert_eq!(Layer::from_name(layer.name()), Some(layer));
        }
        assert_eq!(Layer::from_name("bogus"), None);
    }

    #[test]
    fn process_backend_reports_namespaces_as_missing() {
        let posture = Posture::process();
        assert_eq!(posture.level(Layer::ProcessGroup), Level::Partially);
        assert_eq!(
            posture.missing(&[Layer::UserNs, Layer::Env, Layer::Landlock]),
            vec![Layer::UserNs, Layer::Landlock]
        );
    }
}
