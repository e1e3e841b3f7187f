//! Canonical JSON: object keys sorted bytewise, no insignificant whitespace.
//!
//! oci-spec's types keep maps (labels, annotations, exposed ports) in `HashMap`s, whose order
//! changes from run to run, so serializing them would change digests. `serde_json::Value` sorts
//! only while no crate in the build turns on serde_json's `preserve_order` feature (features
//! are unified across the dependency graph), so we sort here ourselves and do not depend on it.

use serde_json::Value;

/// The canonical bytes of `value`.
pub fn to_vec(value: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    write(value, &mut out);
    out
}

fn write(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Null | Value::Bool(_) | Value::Number(_) => {
            out.extend_from_slice(value.to_string().as_bytes())
        }
        Value::String(s) => write_str(s, out),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write(item, out);
            }
            out.push(b']');
        }
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push(b'{');
            for (i, (key, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_str(key, out);
                out.push(b':');
                write(item, out);
            }
            out.push(b'}');
        }
    }
}

fn write_str(s: &str, out: &mut Vec<u8>) {
    // serde_json's string escaping is fixed (minimal escapes, \u00XX for other controls), so
    // delegating keeps it correct without re-implementing it.
    out.extend_from_slice(Value::String(s.to_owned()).to_string().as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sorts_keys_at_every_level_and_drops_whitespace() {
        let v = json!({"b": 1, "a": {"z": [true, null], "y": "q\"\n"}, "A": -2});
        assert_eq!(
            String::from_utf8(to_vec(&v)).unwrap(),
            r#"{"A":-2,"a":{"y":"q\"\n","z":[true,null]},"b":1}"#
        );
    }

    #[test]
    fn round_trips_through_serde_json() {
        let v = json!({"k": ["é", 18446744073709551615u64, {"": {}}]});
        let back: Value = serde_json::from_slice(&to_vec(&v)).unwrap();
        assert_eq!(back, v);
    }
}
