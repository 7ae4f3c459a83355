//! The on-disk format across versions: a data dir written by an earlier
//! jujud (a fixture checked in under tests/fixtures/, made by running that
//! code) opens in this one with its state intact, and a data dir of a newer
//! layout is refused with a message naming both versions.
//!
//! Opens the data dir and the state log exactly as `jujud peer` does
//! (`DataDir::open`, `Store::open`), on a copy in a temporary directory:
//! real files, real fsync.

#![cfg(feature = "runtime")]

use std::path::Path;

use jujud::core::state::{Actor, model};
use jujud::runtime::datadir::{DataDir, DataDirError, FORMAT_VERSION};
use jujud::runtime::store::Store;
use jujud::runtime::wal::LogIdentity;

/// Made by the code of main at 8f554fc (layout 1): `jujud peer` on an
/// empty dir, then `juju deploy web -n 3`, `juju config web port=8080`,
/// `juju add-machine -n 2`, `juju remove-unit web/<3rd>`, `juju
/// controller-config ha-grace-ms=20000`, then SIGTERM. Its status as that
/// code showed it is `datadir-v1.status.json` beside it.
const FIXTURE_V1: &str = "tests/fixtures/datadir-v1";

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), &dest).unwrap();
        }
    }
}

fn fixture_copy(tmp: &Path) -> std::path::PathBuf {
    let dir = tmp.join("d");
    copy_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join(FIXTURE_V1), &dir);
    dir
}

#[test]
fn a_data_dir_written_by_layout_1_opens_with_its_state() {
    let tmp = tempfile::tempdir().unwrap();
    let path = fixture_copy(tmp.path());
    let text = std::fs::read_to_string(path.join("node.json")).unwrap();
    assert!(text.contains("\"format\": 1"), "the fixture is layout 1");
    let (dir, stored) = DataDir::open(&path).expect("a layout-1 data dir opens");
    let mut node = stored.expect("initialised").node;
    let id = LogIdentity { cluster: node.ca_fingerprint.clone(), node: node.node_id.clone() };
    let node_u64 = u64::from_str_radix(&node.node_id, 16).unwrap();
    let me = Actor { node: node_u64, generation: node.generation + 1 };
    let (_store, replica, rec) = Store::open(dir.path(), me, &id, dir.state_expectation(&node))
        .expect("its state log opens");
    let writer = DataDir::state_writer(&node, me.generation, dir.state_expectation(&node), true);
    assert_eq!(writer, me.generation, "layout 1 records no writer: the first start is a new actor");
    dir.note_state_log(&mut node, writer).unwrap();
    assert_eq!((node.format, node.state_writer), (FORMAT_VERSION, Some(writer)), "migrated");
    // The next start on this disk writes on as that actor.
    let again = DataDir::state_writer(&node, me.generation + 1, dir.state_expectation(&node), true);
    assert_eq!(again, writer, "a restart on the node's own disk adopts the recorded writer");
    assert!(rec.records > 0 && rec.torn_tail_bytes.is_none(), "{rec:?}");

    let view = model::view(&replica);
    let web = view.applications.iter().find(|a| a.name == "web").expect("app web");
    assert_eq!(web.scale, 2, "3 units deployed, one removed");
    assert_eq!(web.config.get("port").map(|s| s.text()), Some("8080".into()));
    assert_eq!(view.units.len(), 2);
    // 3 from the deploy, 2 added (`jujud peer` by hand has no machine).
    assert_eq!(view.machines.len(), 5, "{:?}", view.machines);
    assert_eq!(view.controller.get("ha-grace-ms").map(|s| s.text()), Some("20000".into()));

    // The same units and machines the old code showed.
    let old: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/datadir-v1.status.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let old_units: Vec<String> = old["status"]["units"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["id"].as_str().unwrap().to_string())
        .collect();
    let new_units: Vec<String> = view.units.iter().map(|u| u.id.clone()).collect();
    assert_eq!(new_units, old_units);
    let old_machines = old["status"]["machines"].as_array().unwrap().len();
    assert_eq!(view.machines.len(), old_machines);
}

#[test]
fn a_data_dir_of_a_newer_layout_is_refused_naming_both_versions() {
    let tmp = tempfile::tempdir().unwrap();
    let path = fixture_copy(tmp.path());
    let node_file = path.join("node.json");
    let text = std::fs::read_to_string(&node_file).unwrap();
    let newer = FORMAT_VERSION + 1;
    let bumped = text.replacen("\"format\": 1", &format!("\"format\": {newer}"), 1);
    assert_ne!(bumped, text, "the fixture names its format");
    std::fs::write(&node_file, bumped).unwrap();
    let err = DataDir::open(&path).expect_err("a newer layout is refused");
    assert!(matches!(err, DataDirError::Version { found, .. } if found == newer), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains(&newer.to_string()) && msg.contains(&FORMAT_VERSION.to_string()),
        "the message names both versions: {msg}"
    );
    // Nothing was changed by the refusal.
    assert!(path.join("state/log-00000000000000000001.wal").exists());
}
