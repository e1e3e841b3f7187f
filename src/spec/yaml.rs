//! YAML plumbing shared by both spec sources: parse to a `Value`, walk it with typed getters
//! that report the key path, and find the line and column of any key path.
//!
//! Why not `#[serde(deny_unknown_fields)]` structs: serde's messages cannot say what to do, and
//! semantic checks made after deserialization (relative path, packages for nodejs) would have
//! no location, because `serde_yaml_ng::Value` carries no spans. Instead the checks walk the
//! `Value`, and a failing check asks [`Doc::location`] where its key path is. That re-reads the
//! text with a `DeserializeSeed` that follows the path and fails on purpose at its end: the
//! parser then stamps the error with the exact mark of that node. Same parser, same
//! positions, no hand-written YAML scanner; it only runs when there is an error to report.

use std::fmt;
use std::path::Path;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_yaml_ng::Value;

use super::SpecError;

/// One step of a key path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Seg {
    Key(String),
    Index(usize),
}

/// Where a value sits in the document: `languages.python3.packages[1]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct KeyPath(Vec<Seg>);

impl KeyPath {
    pub(crate) fn root() -> Self {
        KeyPath(Vec::new())
    }

    pub(crate) fn key(&self, key: &str) -> Self {
        let mut segs = self.0.clone();
        segs.push(Seg::Key(key.to_string()));
        KeyPath(segs)
    }

    pub(crate) fn index(&self, index: usize) -> Self {
        let mut segs = self.0.clone();
        segs.push(Seg::Index(index));
        KeyPath(segs)
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("(top level)");
        }
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Key(k) if i == 0 => f.write_str(k)?,
                Seg::Key(k) => write!(f, ".{k}")?,
                Seg::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

/// Which part of a mapping entry a message points at: the value (wrong type, bad value) or
/// the key itself (unknown key, key not allowed here).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum At {
    Value,
    Key,
}

/// A YAML document being validated: its text (for locations) and where it came from.
pub(crate) struct Doc<'a> {
    pub(crate) text: &'a str,
    pub(crate) origin: &'a Path,
}

impl<'a> Doc<'a> {
    /// Parse the text; syntax errors keep the parser's line and column.
    pub(crate) fn parse(&self) -> Result<Value, SpecError> {
        serde_yaml_ng::from_str::<Value>(self.text).map_err(|e| {
            let (line, column) = e
                .location()
                .map(|l| (l.line(), l.column()))
                .unwrap_or((1, 1));
            let (key, message) = split_parser_message(&e.to_string(), line, column);
            let hint = if message.starts_with("duplicate entry") {
                "each key may appear only once in a mapping; remove or merge the repeated one"
            } else {
                "this is not valid YAML: check indentation, colons after keys and closing \
                 brackets/quotes"
            };
            SpecError::Invalid {
                path: self.origin.to_path_buf(),
                line,
                column,
                key: key.unwrap_or_else(|| "(yaml syntax)".to_string()),
                message: format!("{message}; {hint}"),
            }
        })
    }

    /// An error at `path`, with the line and column looked up in the text.
    pub(crate) fn invalid(&self, path: &KeyPath, at: At, message: impl Into<String>) -> SpecError {
        let (line, column) = self.location(path, at);
        SpecError::Invalid {
            path: self.origin.to_path_buf(),
            line,
            column,
            key: path.to_string(),
            message: message.into(),
        }
    }

    /// A warning string in the same `file:line:column: key: message` shape as errors.
    pub(crate) fn warning(&self, path: &KeyPath, message: &str) -> String {
        let (line, column) = self.location(path, At::Value);
        format!(
            "{}:{line}:{column}: {path}: {message}",
            self.origin.display()
        )
    }

    /// 1-based line and column of `path`. A path that is not in the text (a missing key)
    /// falls back to its nearest existing ancestor, and the root to 1:1.
    pub(crate) fn location(&self, path: &KeyPath, at: At) -> (usize, usize) {
        let mut segs: &[Seg] = &path.0;
        let mut at = at;
        loop {
            if segs.is_empty() {
                return (1, 1);
            }
            // A list item has no key of its own: point at the item.
            let at_here = match segs.last() {
                Some(Seg::Index(_)) => At::Value,
                _ => at,
            };
            if let Some(found) = locate(self.text, segs, at_here) {
                return found;
            }
            // Point at the parent's key line ("python3:") rather than the first line of its
            // value, which reads better for "missing key" messages.
            segs = &segs[..segs.len() - 1];
            at = At::Key;
        }
    }

    // ---- typed getters: each names the key path and says what to write instead ----

    /// The entries of a mapping, in document order, checking every key against `allowed`.
    /// `null` (a key with nothing after the colon) counts as an empty mapping.
    pub(crate) fn mapping<'v>(
        &self,
        v: &'v Value,
        path: &KeyPath,
        allowed: &[&str],
    ) -> Result<Vec<(String, &'v Value)>, SpecError> {
        self.mapping_with(v, path, allowed, None)
    }

    /// [`Doc::mapping`] for files written for another program (dify-sandbox's config.yaml):
    /// an unknown key becomes a warning naming file:line and is skipped, instead of an error.
    pub(crate) fn mapping_lenient<'v>(
        &self,
        v: &'v Value,
        path: &KeyPath,
        allowed: &[&str],
        warnings: &mut Vec<String>,
    ) -> Result<Vec<(String, &'v Value)>, SpecError> {
        self.mapping_with(v, path, allowed, Some(warnings))
    }

    fn mapping_with<'v>(
        &self,
        v: &'v Value,
        path: &KeyPath,
        allowed: &[&str],
        mut unknown_as_warning: Option<&mut Vec<String>>,
    ) -> Result<Vec<(String, &'v Value)>, SpecError> {
        let map = match v {
            Value::Null => return Ok(Vec::new()),
            Value::Mapping(m) => m,
            other => {
                return Err(self.invalid(
                    path,
                    At::Value,
                    format!(
                        "expected a mapping (`key: value` lines), found {}; valid keys here: {}",
                        describe(other),
                        allowed.join(", ")
                    ),
                ))
            }
        };
        let mut out = Vec::with_capacity(map.len());
        for (k, val) in map {
            let key = match k {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                other => {
                    return Err(self.invalid(
                        path,
                        At::Value,
                        format!(
                            "keys must be plain words, found {}; valid keys here: {}",
                            describe(other),
                            allowed.join(", ")
                        ),
                    ))
                }
            };
            if !allowed.contains(&key.as_str()) {
                let hint = match suggest(&key, allowed) {
                    Some(s) => format!(" (did you mean `{s}`?)"),
                    None => String::new(),
                };
                let message = format!(
                    "unknown key `{key}`{hint}; valid keys here: {}",
                    allowed.join(", ")
                );
                if let Some(warnings) = unknown_as_warning.as_deref_mut() {
                    warnings.push(self.warning(
                        &path.key(&key),
                        &format!("{message}; ignored (--strict makes this an error)"),
                    ));
                    continue;
                }
                return Err(self.invalid(&path.key(&key), At::Key, message));
            }
            out.push((key, val));
        }
        Ok(out)
    }

    pub(crate) fn string(&self, v: &Value, path: &KeyPath) -> Result<String, SpecError> {
        match v {
            Value::String(s) => Ok(s.clone()),
            Value::Number(_) | Value::Bool(_) => Err(self.invalid(
                path,
                At::Value,
                format!(
                    "expected a string, found {}; put it in quotes if it is meant as text",
                    describe(v)
                ),
            )),
            other => Err(self.invalid(
                path,
                At::Value,
                format!("expected a string, found {}", describe(other)),
            )),
        }
    }

    /// A boolean; `null` means the default.
    pub(crate) fn boolean(
        &self,
        v: &Value,
        path: &KeyPath,
        default: bool,
    ) -> Result<bool, SpecError> {
        match v {
            Value::Null => Ok(default),
            Value::Bool(b) => Ok(*b),
            other => Err(self.invalid(
                path,
                At::Value,
                format!("expected true or false, found {}", describe(other)),
            )),
        }
    }

    /// A list; `null` means empty.
    pub(crate) fn list<'v>(&self, v: &'v Value, path: &KeyPath) -> Result<&'v [Value], SpecError> {
        match v {
            Value::Null => Ok(&[]),
            Value::Sequence(s) => Ok(s),
            other => Err(self.invalid(
                path,
                At::Value,
                format!(
                    "expected a list (`[a, b]` or `- a` lines), found {}",
                    describe(other)
                ),
            )),
        }
    }

    /// One of a fixed set of words; returns its index in `allowed`.
    pub(crate) fn one_of(
        &self,
        v: &Value,
        path: &KeyPath,
        allowed: &[&str],
    ) -> Result<usize, SpecError> {
        let s = match v {
            Value::String(s) => s.as_str(),
            other => {
                return Err(self.invalid(
                    path,
                    At::Value,
                    format!(
                        "expected one of {}, found {}",
                        allowed.join(" | "),
                        describe(other)
                    ),
                ))
            }
        };
        allowed.iter().position(|a| *a == s).ok_or_else(|| {
            self.invalid(
                path,
                At::Value,
                format!("`{s}` is not allowed; use one of {}", allowed.join(" | ")),
            )
        })
    }
}

/// The parser's message as `(key path, message)` without the location we already report.
/// serde_yaml_ng prints some errors as `path: message at line L column C` (duplicate keys)
/// and libyaml's as `problem at line L column C, context at ...`; the path is only available
/// through that text.
fn split_parser_message(text: &str, line: usize, column: usize) -> (Option<String>, String) {
    let here = format!(" at line {line} column {column}");
    let text = text.replacen(&here, "", 1);
    if let Some((head, rest)) = text.split_once(": ") {
        let looks_like_path = !head.is_empty()
            && head
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '[' | ']'));
        if looks_like_path {
            return (Some(head.to_string()), rest.to_string());
        }
    }
    (None, text)
}

/// A short description of a value for messages: its YAML type and, for scalars, the value.
pub(crate) fn describe(v: &Value) -> String {
    match v {
        Value::Null => "nothing (null)".to_string(),
        Value::Bool(b) => format!("the boolean {b}"),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) => format!("the string {s:?}"),
        Value::Sequence(_) => "a list".to_string(),
        Value::Mapping(_) => "a mapping".to_string(),
        Value::Tagged(t) => format!("a value tagged {}", t.tag),
    }
}

/// The closest allowed key within a small edit distance, for "did you mean".
fn suggest<'k>(key: &str, allowed: &[&'k str]) -> Option<&'k str> {
    allowed
        .iter()
        .map(|a| (edit_distance(key, a), *a))
        .filter(|(d, a)| *d <= 2.max(a.len() / 4) && *d < a.len())
        .min_by_key(|(d, _)| *d)
        .map(|(_, a)| a)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

// ---- locating a key path by making the real parser fail there ----

/// A message no real document produces, so a located error is told apart from any other.
const FOUND: &str = "\u{1}prebake: located\u{1}";

fn found<E: de::Error>() -> E {
    E::custom(FOUND)
}

/// Line and column of the node at `segs` (or of its key), if it exists in the text.
fn locate(text: &str, segs: &[Seg], at: At) -> Option<(usize, usize)> {
    let de = serde_yaml_ng::Deserializer::from_str(text);
    match (Seek { segs, at }).deserialize(de) {
        Err(e) if e.to_string().contains(FOUND) => e.location().map(|l| (l.line(), l.column())),
        _ => None,
    }
}

/// Follows `segs` down the document, skipping everything else, and fails at the target.
struct Seek<'p> {
    segs: &'p [Seg],
    at: At,
}

impl Seek<'_> {
    fn leaf<E: de::Error>(&self) -> Result<(), E> {
        if self.segs.is_empty() {
            Err(found())
        } else {
            Ok(())
        }
    }
}

impl<'de> DeserializeSeed<'de> for Seek<'_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Seek<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        self.leaf()
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        self.leaf()
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        self.leaf()
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        self.leaf()
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        self.leaf()
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.leaf()
    }
    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        self.leaf()
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let Some((first, rest)) = self.segs.split_first() else {
            return Err(found());
        };
        let want = match first {
            Seg::Key(k) => Some(k.as_str()),
            Seg::Index(_) => None,
        };
        let fail_on_key = rest.is_empty() && self.at == At::Key;
        while let Some(hit) = map.next_key_seed(KeyProbe { want, fail_on_key })? {
            if hit {
                map.next_value_seed(Seek {
                    segs: rest,
                    at: self.at,
                })?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let Some((first, rest)) = self.segs.split_first() else {
            return Err(found());
        };
        let want = match first {
            Seg::Index(n) => Some(*n),
            Seg::Key(_) => None,
        };
        let mut i = 0;
        loop {
            if Some(i) == want {
                let seek = Seek {
                    segs: rest,
                    at: self.at,
                };
                if seq.next_element_seed(seek)?.is_none() {
                    return Ok(());
                }
            } else if seq.next_element::<IgnoredAny>()?.is_none() {
                return Ok(());
            }
            i += 1;
        }
    }
}

/// Reads one mapping key and says whether it is the one wanted; fails there when the key
/// itself is the target.
struct KeyProbe<'p> {
    want: Option<&'p str>,
    fail_on_key: bool,
}

impl KeyProbe<'_> {
    fn check<E: de::Error>(&self, key: &str) -> Result<bool, E> {
        let hit = self.want == Some(key);
        if hit && self.fail_on_key {
            Err(found())
        } else {
            Ok(hit)
        }
    }
}

impl<'de> DeserializeSeed<'de> for KeyProbe<'_> {
    type Value = bool;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for KeyProbe<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a mapping key")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<bool, E> {
        self.check(v)
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<bool, E> {
        self.check(&v.to_string())
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<bool, E> {
        self.check(&v.to_string())
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<bool, E> {
        self.check(&v.to_string())
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<bool, E> {
        self.check(&v.to_string())
    }
    fn visit_unit<E: de::Error>(self) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(false)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loc(text: &str, path: &KeyPath, at: At) -> (usize, usize) {
        Doc {
            text,
            origin: Path::new("t.yaml"),
        }
        .location(path, at)
    }

    #[test]
    fn locates_keys_values_and_list_items() {
        let text = "a: 1\nb:\n  c: [x, y]\n  d:\n    - p\n    - q\n";
        let r = KeyPath::root();
        assert_eq!(loc(text, &r.key("a"), At::Key), (1, 1));
        assert_eq!(loc(text, &r.key("a"), At::Value), (1, 4));
        assert_eq!(loc(text, &r.key("b").key("c").index(1), At::Value), (3, 10));
        assert_eq!(loc(text, &r.key("b").key("d").index(1), At::Value), (6, 7));
        assert_eq!(loc(text, &r.key("b").key("d"), At::Key), (4, 3));
        // Missing keys fall back to the nearest ancestor that exists.
        assert_eq!(loc(text, &r.key("b").key("zz"), At::Key), (2, 1));
        assert_eq!(loc(text, &r.key("nope"), At::Value), (1, 1));
    }

    #[test]
    fn key_path_display() {
        let p = KeyPath::root()
            .key("languages")
            .key("python3")
            .key("packages")
            .index(1);
        assert_eq!(p.to_string(), "languages.python3.packages[1]");
        assert_eq!(KeyPath::root().to_string(), "(top level)");
    }

    #[test]
    fn suggestions() {
        assert_eq!(suggest("pakages", &["packages", "paths"]), Some("packages"));
        assert_eq!(suggest("zzzzzz", &["packages", "paths"]), None);
    }
}
