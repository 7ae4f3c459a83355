//! Machine and unit ids as people type and read them, git-style: any
//! unique prefix of at least [`MIN_PREFIX_CHARS`] characters names an id,
//! and tables show each id's shortest unique prefix (never shorter than
//! that). JSON output keeps full ids.
//!
//! Owns prefix resolution and shortening over a list of known ids. Must
//! never pick one of several matching ids (an ambiguous prefix is an
//! error naming the candidates), and never shorten an id so far that it
//! would name another.

use std::collections::BTreeMap;

/// The shortest prefix accepted or shown (as git's abbreviated hashes).
pub const MIN_PREFIX_CHARS: usize = 4;
/// Most candidates named in an "ambiguous" error.
pub const MAX_CANDIDATES_SHOWN: usize = 5;

/// Why a typed id names no single known id.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PrefixError {
    #[error("{what} {given} does not exist")]
    Unknown { what: &'static str, given: String },
    #[error("{what} {given:?} is ambiguous: it could be {}", candidates.join(", "))]
    Ambiguous { what: &'static str, given: String, candidates: Vec<String> },
    #[error("{what} {given:?} is too short: type at least {MIN_PREFIX_CHARS} characters of the id")]
    TooShort { what: &'static str, given: String },
}

/// The full id that `given` names among `known`: itself if it is one, else
/// the one id it is a prefix of. `skip` characters at the start (an
/// application's `NAME/`) do not count towards [`MIN_PREFIX_CHARS`].
pub fn resolve(
    what: &'static str,
    known: &[String],
    given: &str,
    skip: usize,
) -> Result<String, PrefixError> {
    if known.iter().any(|k| k == given) {
        return Ok(given.to_string());
    }
    let matches: Vec<&String> = known.iter().filter(|k| k.starts_with(given)).collect();
    match matches.as_slice() {
        [] => Err(PrefixError::Unknown { what, given: given.into() }),
        _ if given.chars().count() < skip + MIN_PREFIX_CHARS => {
            Err(PrefixError::TooShort { what, given: given.into() })
        }
        [one] => Ok((*one).clone()),
        many => Err(PrefixError::Ambiguous {
            what,
            given: given.into(),
            candidates: many.iter().take(MAX_CANDIDATES_SHOWN).map(|s| s.to_string()).collect(),
        }),
    }
}

/// Each id's shortest prefix that no other id in `ids` starts with, at
/// least `skip` + [`MIN_PREFIX_CHARS`] characters (or the whole id).
pub fn shortest(ids: &[&str], skip: usize) -> BTreeMap<String, String> {
    let mut sorted: Vec<&str> = ids.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let common = |a: &str, b: &str| a.chars().zip(b.chars()).take_while(|(x, y)| x == y).count();
    let mut out = BTreeMap::new();
    for (i, id) in sorted.iter().enumerate() {
        let before = i.checked_sub(1).map_or(0, |j| common(sorted[j], id));
        let after = sorted.get(i + 1).map_or(0, |n| common(n, id));
        let want = (before.max(after) + 1).max(skip + MIN_PREFIX_CHARS);
        let short: String = id.chars().take(want).collect();
        out.insert(id.to_string(), short);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_unique_prefix_names_its_id_and_nothing_else_does() {
        let known =
            ids(&["6ey9whv6pn3p6-1", "6ey9whv6pn3p6-2", "6f00aaaaaaaaa-1", "abc-1", "abc-10"]);
        let r = |g| resolve("machine", &known, g, 0);
        assert_eq!(r("6f00"), Ok("6f00aaaaaaaaa-1".into()));
        assert_eq!(r("6ey9whv6pn3p6-2"), Ok("6ey9whv6pn3p6-2".into()));
        assert_eq!(r("abc-1"), Ok("abc-1".into()), "an exact id wins over longer ones");
        assert!(
            matches!(r("6ey9"), Err(PrefixError::Ambiguous { candidates, .. }) if candidates.len() == 2)
        );
        assert!(matches!(r("6f0"), Err(PrefixError::TooShort { .. })));
        assert!(matches!(r("zzzz"), Err(PrefixError::Unknown { .. })));
        let units = ids(&["web/6ey9whv6pn3p6-1", "db/6ey9whv6pn3p6-1"]);
        assert_eq!(resolve("unit", &units, "web/6ey9", 4), Ok("web/6ey9whv6pn3p6-1".into()));
        assert!(matches!(resolve("unit", &units, "web/6ey", 4), Err(PrefixError::TooShort { .. })));
    }

    #[test]
    fn the_shortest_prefix_is_unique_and_at_least_four_characters() {
        let all = [
            "6ey9whv6pn3p6-1",
            "6ey9whv6pn3p6-2",
            "6f00aaaaaaaaa-1",
            "k2aaaaaaaaaaa-1",
            "abc-1",
            "abc-10",
        ];
        let s = shortest(&all, 0);
        assert_eq!(s["6f00aaaaaaaaa-1"], "6f00");
        assert_eq!(s["k2aaaaaaaaaaa-1"], "k2aa");
        assert_eq!(s["6ey9whv6pn3p6-1"], "6ey9whv6pn3p6-1");
        assert_eq!(s["abc-1"], "abc-1", "a prefix of another id stays whole");
        let known = ids(&all);
        for (full, short) in &s {
            assert_eq!(resolve("machine", &known, short, 0).as_ref(), Ok(full), "{short}");
        }
        assert_eq!(shortest(&["web/k2aaaaaaaaaaa-1"], 4)["web/k2aaaaaaaaaaa-1"], "web/k2aa");
    }
}
