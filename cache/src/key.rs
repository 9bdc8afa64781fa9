//! The action key: one BLAKE3 digest over everything that can change a step's result.
//!
//! Each part (command, environment, sandbox policy, input tree, needed steps' outputs,
//! declared tools, platform, `SOURCE_DATE_EPOCH`, declared outputs) is encoded canonically
//! and hashed on its own; the key is BLAKE3 in derive-key mode, under a versioned context
//! string, over the parts' tags and digests. Collections are sorted before encoding, so the
//! order a plan lists things in does not matter; every string is length-prefixed, so no two
//! different parts encode alike. The parts' digests go into the manifest as a
//! [`KeySummary`], which tells a miss caused by the environment from one caused by an input.
//!
//! Changing the encoding of any part changes every key: bump [`KEY_CONTEXT`] then.

use std::collections::BTreeMap;

use crate::ActionKey;
use crate::digest::Digest;

/// The derive-key context: names this project, the date the encoding was fixed, and its
/// version.
pub const KEY_CONTEXT: &str = "ci-intel 2026-11-28 action key v1";

/// One file of a step's input tree, relative to the plan root.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct InputFile {
    /// `/`-separated path relative to the plan root.
    pub path: String,
    /// Permission bits that matter to a build (`0o755` or `0o644`, and the like).
    pub mode: u32,
    /// The content's digest, or for a symbolic link the digest of its target string.
    pub digest: Digest,
    /// Whether this is a symbolic link (its target, not what it points at, is hashed).
    pub symlink: bool,
}

/// An environment variable's value as the key sees it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum EnvValue {
    /// A plain value.
    Plain(String),
    /// A declared secret: only its presence enters the key, never its value.
    Secret,
}

/// Everything that can change a step's result, gathered by the executor.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyInputs {
    /// The command and its arguments.
    pub argv: Vec<String>,
    /// The working directory, relative to the plan root.
    pub cwd: String,
    /// Every variable the step gets.
    pub env: BTreeMap<String, EnvValue>,
    /// The sandbox policy as `name = value` lines (network mode, allowlist, limits,
    /// visible paths, ...), in any order.
    pub policy: Vec<(String, String)>,
    /// The input tree.
    pub inputs: Vec<InputFile>,
    /// The declared outputs (patterns), in any order.
    pub outputs: Vec<String>,
    /// For each needed step, the digest of its outputs (see [`outputs_digest`]).
    pub needs: BTreeMap<String, Digest>,
    /// Declared tools: name → digest of the executable it resolved to.
    pub tools: BTreeMap<String, Digest>,
    /// The platform fingerprint ([`crate::platform::fingerprint`]).
    pub platform: String,
    /// `SOURCE_DATE_EPOCH` of the run.
    pub source_date_epoch: u64,
}

/// The digests of a key's parts, kept in the manifest to explain misses.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeySummary {
    /// Digest of the command and working directory.
    pub command: Digest,
    /// Digest of the environment.
    pub env: Digest,
    /// Digest of the sandbox policy.
    pub policy: Digest,
    /// Digest of the input tree.
    pub inputs: Digest,
    /// How many input files.
    pub input_files: u64,
    /// Digest of the declared outputs.
    pub outputs: Digest,
    /// Digest of the needed steps' outputs.
    pub needs: Digest,
    /// Digest of the declared tools.
    pub tools: Digest,
    /// The platform fingerprint, as text.
    pub platform: String,
    /// `SOURCE_DATE_EPOCH`.
    pub source_date_epoch: u64,
}

/// A canonical encoder: every item length-prefixed, little-endian lengths.
#[derive(Default)]
struct Enc(blake3::Hasher);

impl Enc {
    fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.0.update(&(b.len() as u64).to_le_bytes());
        self.0.update(b);
        self
    }

    fn str(&mut self, s: &str) -> &mut Self {
        self.bytes(s.as_bytes())
    }

    fn u64(&mut self, v: u64) -> &mut Self {
        self.0.update(&v.to_le_bytes());
        self
    }

    fn count(&mut self, n: usize) -> &mut Self {
        self.u64(n as u64)
    }

    fn digest(&self) -> Digest {
        self.0.finalize().into()
    }
}

impl KeyInputs {
    /// The parts' digests.
    pub fn summary(&self) -> KeySummary {
        let mut command = Enc::default();
        command.count(self.argv.len());
        for a in &self.argv {
            command.str(a);
        }
        command.str(&self.cwd);

        let mut env = Enc::default();
        env.count(self.env.len());
        for (k, v) in &self.env {
            env.str(k);
            match v {
                EnvValue::Plain(v) => env.u64(0).str(v),
                EnvValue::Secret => env.u64(1),
            };
        }

        let mut policy_lines = self.policy.clone();
        policy_lines.sort();
        policy_lines.dedup();
        let mut policy = Enc::default();
        policy.count(policy_lines.len());
        for (k, v) in &policy_lines {
            policy.str(k).str(v);
        }

        let mut files = self.inputs.clone();
        files.sort();
        files.dedup();
        let mut inputs = Enc::default();
        inputs.count(files.len());
        for f in &files {
            inputs
                .str(&f.path)
                .u64(u64::from(f.mode))
                .u64(u64::from(f.symlink))
                .bytes(&f.digest.0);
        }

        let mut declared = self.outputs.clone();
        declared.sort();
        declared.dedup();
        let mut outputs = Enc::default();
        outputs.count(declared.len());
        for o in &declared {
            outputs.str(o);
        }

        let mut needs = Enc::default();
        needs.count(self.needs.len());
        for (step, d) in &self.needs {
            needs.str(step).bytes(&d.0);
        }

        let mut tools = Enc::default();
        tools.count(self.tools.len());
        for (name, d) in &self.tools {
            tools.str(name).bytes(&d.0);
        }

        KeySummary {
            command: command.digest(),
            env: env.digest(),
            policy: policy.digest(),
            inputs: inputs.digest(),
            input_files: files.len() as u64,
            outputs: outputs.digest(),
            needs: needs.digest(),
            tools: tools.digest(),
            platform: self.platform.clone(),
            source_date_epoch: self.source_date_epoch,
        }
    }

    /// The action key.
    pub fn key(&self) -> ActionKey {
        self.summary().key()
    }
}

impl KeySummary {
    /// The action key these parts make.
    pub fn key(&self) -> ActionKey {
        let mut h = blake3::Hasher::new_derive_key(KEY_CONTEXT);
        for (tag, d) in [
            ("command", &self.command),
            ("env", &self.env),
            ("policy", &self.policy),
            ("inputs", &self.inputs),
            ("outputs", &self.outputs),
            ("needs", &self.needs),
            ("tools", &self.tools),
        ] {
            h.update(&(tag.len() as u64).to_le_bytes());
            h.update(tag.as_bytes());
            h.update(&d.0);
        }
        h.update(&(self.platform.len() as u64).to_le_bytes());
        h.update(self.platform.as_bytes());
        h.update(&self.source_date_epoch.to_le_bytes());
        ActionKey(*h.finalize().as_bytes())
    }

    /// The names of the parts that differ from `other`'s, for "why did this miss".
    pub fn differences(&self, other: &KeySummary) -> Vec<&'static str> {
        let mut d = Vec::new();
        let mut check = |name, differs: bool| {
            if differs {
                d.push(name);
            }
        };
        check("command", self.command != other.command);
        check("env", self.env != other.env);
        check("policy", self.policy != other.policy);
        check("inputs", self.inputs != other.inputs);
        check("outputs", self.outputs != other.outputs);
        check("needs", self.needs != other.needs);
        check("tools", self.tools != other.tools);
        check("platform", self.platform != other.platform);
        check(
            "source_date_epoch",
            self.source_date_epoch != other.source_date_epoch,
        );
        d
    }
}

/// One digest for a step's outputs, as a needing step's key sees them: sorted
/// `(path, kind, mode, digest)` entries.
pub fn outputs_digest<'a>(entries: impl IntoIterator<Item = (&'a str, u32, &'a Digest)>) -> Digest {
    let mut list: Vec<(&str, u32, &Digest)> = entries.into_iter().collect();
    list.sort();
    let mut e = Enc::default();
    e.count(list.len());
    for (path, mode, d) in list {
        e.str(path).u64(u64::from(mode)).bytes(&d.0);
    }
    e.digest()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn base() -> KeyInputs {
        KeyInputs {
            argv: vec!["cc".into(), "-c".into(), "a.c".into()],
            cwd: String::new(),
            env: [
                ("TZ".to_string(), EnvValue::Plain("UTC".into())),
                ("TOKEN".to_string(), EnvValue::Secret),
            ]
            .into(),
            policy: vec![
                ("network".into(), "deny".into()),
                ("pids".into(), "4096".into()),
            ],
            inputs: vec![
                InputFile {
                    path: "a.c".into(),
                    mode: 0o644,
                    digest: Digest::of(b"int a;"),
                    symlink: false,
                },
                InputFile {
                    path: "b.h".into(),
                    mode: 0o644,
                    digest: Digest::of(b"int b;"),
                    symlink: false,
                },
            ],
            outputs: vec!["a.o".into()],
            needs: [("gen".to_string(), Digest::of(b"gen outputs"))].into(),
            tools: [("cc".to_string(), Digest::of(b"cc binary"))].into(),
            platform: "x86_64-linux-glibc2.36".into(),
            source_date_epoch: 1_700_000_000,
        }
    }

    /// Every way a single field can change, with the part it shows up in.
    /// What changed, the part it must show up in, and the change.
    type Mutation = (&'static str, &'static str, fn(&mut KeyInputs));

    fn mutations() -> Vec<Mutation> {
        vec![
            ("argument", "command", |k| k.argv[2] = "b.c".into()),
            ("extra argument", "command", |k| k.argv.push("-O2".into())),
            ("argument split differently", "command", |k| {
                k.argv = vec!["cc".into(), "-c a.c".into()];
            }),
            ("working directory", "command", |k| k.cwd = "src".into()),
            ("env value", "env", |k| {
                k.env.insert("TZ".into(), EnvValue::Plain("CET".into()));
            }),
            ("env added", "env", |k| {
                k.env
                    .insert("CFLAGS".into(), EnvValue::Plain(String::new()));
            }),
            ("secret made plain", "env", |k| {
                k.env.insert("TOKEN".into(), EnvValue::Plain(String::new()));
            }),
            ("policy field", "policy", |k| {
                k.policy[0].1 = "loopback".into()
            }),
            ("input byte", "inputs", |k| {
                k.inputs[0].digest = Digest::of(b"int a; ")
            }),
            ("input mode", "inputs", |k| k.inputs[0].mode = 0o755),
            ("input renamed", "inputs", |k| {
                k.inputs[1].path = "c.h".into()
            }),
            ("input became a symlink", "inputs", |k| {
                k.inputs[1].symlink = true
            }),
            ("input removed", "inputs", |k| {
                k.inputs.pop();
            }),
            ("declared outputs", "outputs", |k| {
                k.outputs.push("a.d".into())
            }),
            ("needed step's outputs", "needs", |k| {
                k.needs.insert("gen".into(), Digest::of(b"other"));
            }),
            ("tool bytes", "tools", |k| {
                k.tools.insert("cc".into(), Digest::of(b"cc binary 2"));
            }),
            ("platform", "platform", |k| {
                k.platform = "aarch64-linux-glibc2.36".into()
            }),
            ("SOURCE_DATE_EPOCH", "source_date_epoch", |k| {
                k.source_date_epoch += 1
            }),
        ]
    }

    #[test]
    fn every_field_changes_the_key_and_names_its_part() {
        let b = base();
        for (what, part, mutate) in mutations() {
            let mut m = base();
            mutate(&mut m);
            assert_ne!(m.key(), b.key(), "{what} did not change the key");
            assert_eq!(m.summary().differences(&b.summary()), [part], "{what}");
        }
    }

    #[test]
    fn the_key_is_pinned() {
        // Changing this value changes every key users have stored: bump KEY_CONTEXT.
        assert_eq!(
            base().key().to_string(),
            "ca4566f6fa373daade50a90a4e8d8a7ca691ffd8d64b23751a98fc440ec4e2e3"
        );
    }

    #[test]
    fn lengths_are_prefixed_so_fields_cannot_run_together() {
        let mut a = base();
        a.argv = vec!["ab".into(), "c".into()];
        let mut b = base();
        b.argv = vec!["a".into(), "bc".into()];
        assert_ne!(a.key(), b.key());
        let mut c = base();
        c.policy = vec![("ab".into(), "c".into())];
        let mut d = base();
        d.policy = vec![("a".into(), "bc".into())];
        assert_ne!(c.key(), d.key());
    }

    proptest! {
        #[test]
        fn order_of_env_inputs_policy_and_outputs_does_not_matter(seed in any::<u64>()) {
            let b = base();
            let mut r = base();
            let mut rng = seed;
            let mut shuffle = |n: usize| -> Vec<usize> {
                let mut idx: Vec<usize> = (0..n).collect();
                for i in (1..n).rev() {
                    rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    idx.swap(i, (rng >> 33) as usize % (i + 1));
                }
                idx
            };
            let order = shuffle(r.inputs.len());
            r.inputs = order.iter().map(|&i| b.inputs[i].clone()).collect();
            let order = shuffle(r.policy.len());
            r.policy = order.iter().map(|&i| b.policy[i].clone()).collect();
            r.outputs.push("a.o".into()); // a duplicate pattern is the same set
            prop_assert_eq!(r.key(), b.key());
        }

        #[test]
        fn any_change_to_an_input_digest_changes_the_key(byte in 0usize..32, bit in 0u8..8, which in 0usize..2) {
            let b = base();
            let mut m = base();
            m.inputs[which].digest.0[byte] ^= 1 << bit;
            prop_assert_ne!(m.key(), b.key());
        }

        #[test]
        fn any_env_value_change_changes_the_key(v in ".*") {
            prop_assume!(v != "UTC");
            let mut m = base();
            m.env.insert("TZ".into(), EnvValue::Plain(v));
            prop_assert_ne!(m.key(), base().key());
        }
    }

    #[test]
    fn outputs_digest_ignores_order_but_not_content() {
        let a = Digest::of(b"a");
        let b = Digest::of(b"b");
        let one = outputs_digest([("x", 0o644, &a), ("y", 0o755, &b)]);
        assert_eq!(one, outputs_digest([("y", 0o755, &b), ("x", 0o644, &a)]));
        assert_ne!(one, outputs_digest([("x", 0o644, &b), ("y", 0o755, &a)]));
        assert_ne!(one, outputs_digest([("x", 0o755, &a), ("y", 0o755, &b)]));
    }
}
