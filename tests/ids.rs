//! Machine and unit ids as people type and read them (issue 16): any
//! unique prefix of at least four characters names an id wherever `juju`
//! takes one, an ambiguous or too-short prefix is refused with the
//! candidates named, and `juju status` tables show the shortest unique
//! prefix while `--format json` keeps full ids. Real processes.

mod common;

use common::agent::{change, status};
use serde_json::Value;

fn ids(st: &Value, what: &str) -> Vec<String> {
    st["status"][what]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().into())
        .collect()
}

#[test]
fn unique_prefixes_name_ids_and_tables_show_the_shortest() {
    let c = common::Cluster::start(1);
    let file = c.peers[0].client_file();
    let one = change(&file, &["add-machine"])["machines"][0].as_str().unwrap().to_string();
    let pair = change(&file, &["add-machine", "-n", "2"]);
    let (a, b) = (pair["machines"][0].as_str().unwrap(), pair["machines"][1].as_str().unwrap());

    // The table shows a short, unique prefix of `one`; JSON the full id.
    let table = String::from_utf8(c.juju(&["status"]).stdout).unwrap();
    let shown = table
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .find(|first| one.starts_with(first) && first.len() >= 4)
        .unwrap_or_else(|| panic!("no prefix of {one} in:\n{table}"))
        .to_string();
    assert!(shown.len() < one.len(), "{shown} is shortened from {one}");
    assert!(ids(&status(&file), "machines").contains(&one), "JSON keeps full ids");
    assert!(!table.contains(&one), "the table shows the short form:\n{table}");

    // It names the machine wherever an id is taken.
    change(&file, &["deploy", "web", "--command", "sleep 100", "--to", &shown]);
    let units = ids(&status(&file), "units");
    assert_eq!(units, vec![format!("web/{one}")]);
    let unit_prefix = format!("web/{}", &one[..4]);
    change(&file, &["remove-unit", &unit_prefix]);
    assert!(ids(&status(&file), "units").is_empty(), "the unit named by a prefix was removed");

    // `a` and `b` share their first 13 characters (one batch).
    let common_prefix = &a[..6];
    assert!(b.starts_with(common_prefix));
    let out = c.juju(&["remove-machine", common_prefix]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("ambiguous"), "{err}");
    assert!(err.contains(a) && err.contains(b), "the candidates are named: {err}");
    let out = c.juju(&["remove-machine", &one[..3]]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("too short"), "{err}");
    assert_eq!(ids(&status(&file), "machines").len(), 3, "refusals changed nothing");
    change(&file, &["remove-machine", &shown]);
    change(&file, &["remove-machine", a]);
    let left = ids(&status(&file), "machines");
    assert_eq!(left, vec![b.to_string()]);
}
