//! The policy data (`templates/seccomp/<language>.yaml`), parsed and checked.
//!
//! The YAML is the reviewable source of truth; this module turns it into [`Policy`]: rules with
//! resolved argument conditions, independent of the architecture. Every mistake in the data
//! (unknown key, unknown constant, bad condition) is an error naming the syscall entry.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{Arch, SeccompError};
use crate::spec::Language;

const PYTHON3: &str = include_str!("../../templates/seccomp/python3.yaml");
const NODEJS: &str = include_str!("../../templates/seccomp/nodejs.yaml");

/// Which set a rule belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Set {
    /// Always in force.
    Base,
    /// Only when the request has network; EPERM otherwise.
    Network,
}

/// What a rule does with the calls it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum RuleAction {
    Allow,
    Errno(u32),
}

/// Comparison of one argument, always on its low 32 bits (every argument the policies look
/// at is an `int` or, for clone, flags the kernel truncates to 32 bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Cond {
    pub arg: u8,
    pub op: CmpOp,
    pub value: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    /// `arg & mask == value`
    MaskedEq(u64),
}

/// Alternatives (OR) of conjunctions (AND). Empty: unconditional.
pub type When = Vec<Vec<Cond>>;

#[derive(Debug, Clone)]
pub struct Rule {
    pub name: String,
    pub group: String,
    pub set: Set,
    pub action: RuleAction,
    pub when: When,
    /// The conditions as written, for the table.
    pub when_src: Vec<String>,
    pub why: String,
    /// `None`: every architecture must know the name.
    pub arches: Option<Vec<Arch>>,
}

#[derive(Debug, Clone)]
pub struct Never {
    pub name: String,
    pub why: String,
}

#[derive(Debug, Clone)]
pub struct Policy {
    pub language: Language,
    pub rules: Vec<Rule>,
    pub never: Vec<Never>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    language: String,
    #[serde(default)]
    constants: BTreeMap<String, u64>,
    groups: Vec<GroupData>,
    #[serde(default)]
    network: Vec<EntryData>,
    #[serde(default)]
    never: Vec<NeverData>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GroupData {
    group: String,
    syscalls: Vec<EntryData>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EntryData {
    name: String,
    why: String,
    #[serde(default)]
    when: Vec<String>,
    #[serde(default)]
    errno: Option<String>,
    #[serde(default)]
    arch: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NeverData {
    name: String,
    why: String,
}

/// Errno names the policies may use (same values on x86_64 and aarch64).
pub const ERRNOS: &[(&str, u32)] = &[
    ("EPERM", 1),
    ("ENOENT", 2),
    ("EACCES", 13),
    ("EINVAL", 22),
    ("ENOSYS", 38),
    ("EOPNOTSUPP", 95),
    ("EAFNOSUPPORT", 97),
];

pub fn errno_name(e: u32) -> String {
    ERRNOS
        .iter()
        .find(|&&(_, v)| v == e)
        .map(|&(n, _)| n.to_string())
        .unwrap_or_else(|| e.to_string())
}

impl Policy {
    /// The embedded policy of `language`.
    pub fn load(language: Language) -> Result<Policy, SeccompError> {
        let text = match language {
            Language::Python3 => PYTHON3,
            Language::Nodejs => NODEJS,
        };
        Policy::parse(language, text)
    }

    pub fn parse(language: Language, text: &str) -> Result<Policy, SeccompError> {
        let err = |message: String| SeccompError::Policy {
            language: language.as_str().to_string(),
            message,
        };
        let file: PolicyFile = serde_yaml_ng::from_str(text).map_err(|e| err(e.to_string()))?;
        if file.language != language.as_str() {
            return Err(err(format!(
                "says language `{}`, expected `{}`",
                file.language,
                language.as_str()
            )));
        }
        let mut rules = Vec::new();
        let entries = file
            .groups
            .iter()
            .flat_map(|g| {
                g.syscalls
                    .iter()
                    .map(move |e| (g.group.as_str(), Set::Base, e))
            })
            .chain(file.network.iter().map(|e| ("network", Set::Network, e)));
        for (group, set, e) in entries {
            let ctx = |m: String| err(format!("syscall `{}` (group {group}): {m}", e.name));
            if e.why.trim().is_empty() {
                return Err(ctx("`why` is empty: say why the policy needs it".into()));
            }
            let action = match &e.errno {
                None => RuleAction::Allow,
                Some(name) => ERRNOS
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|&(_, v)| RuleAction::Errno(v))
                    .ok_or_else(|| ctx(format!("unknown errno `{name}`")))?,
            };
            if set == Set::Network && action != RuleAction::Allow {
                return Err(ctx("network entries can only allow".into()));
            }
            let mut when = Vec::new();
            for src in &e.when {
                when.extend(
                    parse_when(src, &file.constants)
                        .map_err(|m| ctx(format!("when `{src}`: {m}")))?,
                );
            }
            let arches = match &e.arch {
                None => None,
                Some(list) => Some(
                    list.iter()
                        .map(|a| Arch::from_name(a).map_err(|_| ctx(format!("unknown arch `{a}`"))))
                        .collect::<Result<Vec<_>, _>>()?,
                ),
            };
            check_names(&e.name, arches.as_deref()).map_err(ctx)?;
            rules.push(Rule {
                name: e.name.clone(),
                group: group.to_string(),
                set,
                action,
                when,
                when_src: e.when.clone(),
                why: e.why.clone(),
                arches,
            });
        }
        let mut never = Vec::new();
        for n in &file.never {
            if let Some(r) = rules.iter().find(|r| r.name == n.name) {
                return Err(err(format!(
                    "syscall `{}` is both in `never` and in group {}",
                    n.name, r.group
                )));
            }
            // `never` names only need to exist somewhere: they are documentation and a guard.
            if !Arch::ALL.iter().any(|a| a.number(&n.name).is_some()) {
                return Err(err(format!(
                    "never: `{}` is not a syscall on any architecture",
                    n.name
                )));
            }
            never.push(Never {
                name: n.name.clone(),
                why: n.why.clone(),
            });
        }
        Ok(Policy {
            language,
            rules,
            never,
        })
    }

    /// Why the policy refuses `name` on purpose, if it does (`never` or an errno rule).
    pub fn refusal(&self, name: &str) -> Option<&str> {
        if let Some(n) = self.never.iter().find(|n| n.name == name) {
            return Some(&n.why);
        }
        self.rules
            .iter()
            .find(|r| r.name == name && matches!(r.action, RuleAction::Errno(_)))
            .map(|r| r.why.as_str())
    }
}

/// A name without `arch` must exist everywhere; with `arch`, exactly on those architectures
/// (so a stale marker that would silently drop a syscall on one architecture is caught).
fn check_names(name: &str, arches: Option<&[Arch]>) -> Result<(), String> {
    for a in Arch::ALL {
        let known = a.number(name).is_some();
        let wanted = arches.map_or(true, |l| l.contains(&a));
        match (known, wanted) {
            (false, true) => {
                return Err(format!(
                    "unknown on {}: mark it `arch: [...]` if it does not exist there",
                    a.as_str()
                ))
            }
            (true, false) if arches.is_some() => {
                return Err(format!(
                    "exists on {} but `arch` leaves it out there",
                    a.as_str()
                ))
            }
            _ => {}
        }
    }
    Ok(())
}

/// Parse one `when` alternative into one or more conjunctions (`in {...}` and `& M != 0`
/// expand to several alternatives, because seccomp and OCI only have AND within a rule).
fn parse_when(src: &str, constants: &BTreeMap<String, u64>) -> Result<When, String> {
    let mut alts: When = vec![Vec::new()];
    for part in src.split("&&") {
        let options = parse_cond(part.trim(), constants)?;
        alts = alts
            .iter()
            .flat_map(|a| {
                options.iter().map(move |o| {
                    let mut a = a.clone();
                    a.push(*o);
                    a
                })
            })
            .collect();
    }
    Ok(alts)
}

/// `argN [& MASK] OP VALUE` or `argN in {A, B}`; returns the alternatives it stands for.
fn parse_cond(s: &str, constants: &BTreeMap<String, u64>) -> Result<Vec<Cond>, String> {
    let rest = s
        .strip_prefix("arg")
        .ok_or_else(|| format!("`{s}` must start with argN"))?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    let arg: u8 = digits
        .parse()
        .ok()
        .filter(|a| *a <= 5)
        .ok_or_else(|| format!("`{s}`: argument index must be 0..=5"))?;
    let rest = rest[digits.len()..].trim();
    if let Some(set) = rest.strip_prefix("in") {
        let set = set
            .trim()
            .strip_prefix('{')
            .and_then(|x| x.strip_suffix('}'))
            .ok_or_else(|| format!("`{s}`: expected `in {{A, B, ...}}`"))?;
        return set
            .split(',')
            .map(|v| {
                Ok(Cond {
                    arg,
                    op: CmpOp::Eq,
                    value: value(v.trim(), constants)?,
                })
            })
            .collect();
    }
    let (mask, rest) = match rest.strip_prefix('&') {
        Some(r) => {
            let r = r.trim();
            let end = r
                .find(['=', '!', '<', '>'])
                .ok_or_else(|| format!("`{s}`: missing comparison"))?;
            (Some(value(r[..end].trim(), constants)?), r[end..].trim())
        }
        None => (None, rest),
    };
    let (op, v) = ["==", "!=", "<=", ">=", "<", ">"]
        .iter()
        .find_map(|op| rest.strip_prefix(op).map(|v| (*op, v.trim())))
        .ok_or_else(|| format!("`{s}`: expected one of == != < <= > >="))?;
    let v = value(v, constants)?;
    match (mask, op) {
        (None, _) => {
            let op = match op {
                "==" => CmpOp::Eq,
                "!=" => CmpOp::Ne,
                "<" => CmpOp::Lt,
                "<=" => CmpOp::Le,
                ">" => CmpOp::Gt,
                _ => CmpOp::Ge,
            };
            Ok(vec![Cond { arg, op, value: v }])
        }
        (Some(m), "==") => Ok(vec![Cond {
            arg,
            op: CmpOp::MaskedEq(m),
            value: v,
        }]),
        // `arg & M != 0`: any bit of M set, one alternative per bit.
        (Some(m), "!=") if v == 0 && m != 0 => Ok((0..64)
            .map(|b| 1u64 << b)
            .filter(|bit| m & bit != 0)
            .map(|bit| Cond {
                arg,
                op: CmpOp::MaskedEq(bit),
                value: bit,
            })
            .collect()),
        _ => Err(format!(
            "`{s}`: with a mask only `== V` and `!= 0` are supported"
        )),
    }
}

fn value(s: &str, constants: &BTreeMap<String, u64>) -> Result<u64, String> {
    let mut out = 0u64;
    for term in s.split('|') {
        let t = term.trim();
        let v = if let Some(hex) = t.strip_prefix("0x") {
            u64::from_str_radix(hex, 16).ok()
        } else if t.starts_with(|c: char| c.is_ascii_digit()) {
            t.parse().ok()
        } else {
            constants.get(t).copied()
        };
        out |= v.ok_or_else(|| format!("`{t}` is neither a number nor a constant"))?;
    }
    if out > u64::from(u32::MAX) {
        return Err(format!("`{s}` does not fit in 32 bits"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn consts() -> BTreeMap<String, u64> {
        [("A".to_string(), 1), ("B".to_string(), 6)]
            .into_iter()
            .collect()
    }

    #[test]
    fn conditions_expand() {
        let w = parse_when("arg0 in {A, B} && arg1 & 0x3 != 0", &consts()).unwrap();
        assert_eq!(w.len(), 4);
        assert_eq!(
            w[0],
            vec![
                Cond {
                    arg: 0,
                    op: CmpOp::Eq,
                    value: 1
                },
                Cond {
                    arg: 1,
                    op: CmpOp::MaskedEq(1),
                    value: 1
                }
            ]
        );
        let w = parse_when("arg2 & A|B == 0", &consts()).unwrap();
        assert_eq!(
            w,
            vec![vec![Cond {
                arg: 2,
                op: CmpOp::MaskedEq(7),
                value: 0
            }]]
        );
        assert!(parse_when("arg6 == 1", &consts()).is_err());
        assert!(parse_when("arg0 == C", &consts()).is_err());
        assert!(parse_when("arg0 & 1 < 3", &consts()).is_err());
    }

    #[test]
    fn embedded_policies_parse() {
        for l in [Language::Python3, Language::Nodejs] {
            let p = Policy::load(l).unwrap();
            assert!(p.rules.iter().any(|r| r.name == "clone3"));
            assert!(p.refusal("ptrace").is_some());
        }
    }
}
