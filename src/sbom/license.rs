//! License names as SBOMs want them: SPDX license expressions. Debian's DEP-5 short names and
//! Python's metadata are mapped to SPDX identifiers where the meaning is unambiguous; anything
//! else becomes a `LicenseRef-` that keeps the original name, never a guess.

/// An SPDX license expression, and the `LicenseRef-`s in it with the names they stand for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct License {
    pub expression: String,
    /// (`LicenseRef-…`, the name the package used).
    pub refs: Vec<(String, String)>,
}

/// Debian short names (and common spellings) whose SPDX identifier is certain.
const DEBIAN_TO_SPDX: &[(&str, &str)] = &[
    ("GPL-1", "GPL-1.0-only"),
    ("GPL-1+", "GPL-1.0-or-later"),
    ("GPL-2", "GPL-2.0-only"),
    ("GPL-2+", "GPL-2.0-or-later"),
    ("GPL-3", "GPL-3.0-only"),
    ("GPL-3+", "GPL-3.0-or-later"),
    ("LGPL-2", "LGPL-2.0-only"),
    ("LGPL-2+", "LGPL-2.0-or-later"),
    ("LGPL-2.1", "LGPL-2.1-only"),
    ("LGPL-2.1+", "LGPL-2.1-or-later"),
    ("LGPL-3", "LGPL-3.0-only"),
    ("LGPL-3+", "LGPL-3.0-or-later"),
    ("AGPL-3", "AGPL-3.0-only"),
    ("AGPL-3+", "AGPL-3.0-or-later"),
    ("Expat", "MIT"),
    ("MIT", "MIT"),
    ("BSD-2-clause", "BSD-2-Clause"),
    ("BSD-3-clause", "BSD-3-Clause"),
    ("BSD-4-clause", "BSD-4-Clause"),
    ("Apache-2.0", "Apache-2.0"),
    ("Apache-2", "Apache-2.0"),
    ("ISC", "ISC"),
    ("Zlib", "Zlib"),
    ("MPL-1.1", "MPL-1.1"),
    ("MPL-2.0", "MPL-2.0"),
    ("PSF-2", "PSF-2.0"),
    ("PSF-2.0", "PSF-2.0"),
    ("Python-2.0", "Python-2.0"),
    ("CC0-1.0", "CC0-1.0"),
    ("0BSD", "0BSD"),
    ("Unlicense", "Unlicense"),
    ("OpenSSL", "OpenSSL"),
    ("curl", "curl"),
    ("X11", "X11"),
    ("BSL-1.0", "BSL-1.0"),
    ("Unicode-DFS-2016", "Unicode-DFS-2016"),
];

/// One license name or a simple `A or B` / `A and B` of them.
pub fn parse(value: &str) -> License {
    let mut refs = Vec::new();
    let expression = expression(value, &mut refs);
    License { expression, refs }
}

/// All of `values` at once (a package under several licenses): `A AND (B OR C)`.
pub fn all_of(values: &[&str]) -> Option<License> {
    let mut refs = Vec::new();
    let parts: Vec<String> = values
        .iter()
        .map(|v| {
            let e = expression(v, &mut refs);
            if e.contains(' ') && values.len() > 1 {
                format!("({e})")
            } else {
                e
            }
        })
        .collect();
    refs.sort();
    refs.dedup();
    (!parts.is_empty()).then(|| License {
        expression: parts.join(" AND "),
        refs,
    })
}

fn expression(value: &str, refs: &mut Vec<(String, String)>) -> String {
    let words: Vec<&str> = value.split_whitespace().collect();
    // `A or B or C` (one operator kind only: Debian leaves mixed precedence undefined).
    let ops: Vec<String> = words
        .iter()
        .skip(1)
        .step_by(2)
        .map(|w| w.to_ascii_lowercase())
        .collect();
    let simple = words.len() % 2 == 1
        && ops.iter().all(|o| o == "or" || o == "and")
        && ops.windows(2).all(|w| w[0] == w[1])
        && !value.contains(',');
    if !simple {
        return license_ref(value, refs);
    }
    let op = if ops.first().is_some_and(|o| o == "and") {
        " AND "
    } else {
        " OR "
    };
    let ids: Vec<String> = words
        .iter()
        .step_by(2)
        .map(|w| match spdx_id(w) {
            Some(id) => id.to_owned(),
            None => license_ref(w, refs),
        })
        .collect();
    ids.join(op)
}

fn spdx_id(name: &str) -> Option<&'static str> {
    DEBIAN_TO_SPDX
        .iter()
        .find(|(d, _)| d.eq_ignore_ascii_case(name))
        .map(|(_, s)| *s)
}

/// `LicenseRef-<name with every character SPDX forbids as '-'>`, remembered in `refs`.
fn license_ref(name: &str, refs: &mut Vec<(String, String)>) -> String {
    let id: String = name
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let id = format!("LicenseRef-{id}");
    if !refs.iter().any(|(r, _)| *r == id) {
        refs.push((id.clone(), name.trim().to_owned()));
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_names_map_and_unknown_ones_keep_their_name() {
        assert_eq!(parse("Expat").expression, "MIT");
        assert_eq!(
            parse("GPL-2+ or Artistic").expression,
            "GPL-2.0-or-later OR LicenseRef-Artistic"
        );
        let odd = parse("GPL-2+ with OpenSSL exception");
        assert_eq!(odd.expression, "LicenseRef-GPL-2--with-OpenSSL-exception");
        assert_eq!(odd.refs[0].1, "GPL-2+ with OpenSSL exception");
        assert_eq!(parse("a or b and c").expression, "LicenseRef-a-or-b-and-c");
    }
}
