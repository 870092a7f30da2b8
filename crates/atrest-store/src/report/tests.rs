use std::sync::Arc;

use atrest_core::config::{load_file, LoadOptions};
use atrest_testkit::sample;
use serde_json::Value;

use super::*;

fn transformers(config: &str) -> Transformers {
    let cfg =
        load_file(&sample::config(config), &LoadOptions::default()).expect("sample config loads");
    Transformers::build(&cfg, Arc::new(atrest_core::kms::NoKms)).expect("transformers")
}

fn report(config: &str, verify: bool, list: bool) -> StatusReport {
    let opts = ReportOptions {
        etcd_prefix: "/registry".into(),
        verify,
        list,
    };
    let mut b = StatusReportBuilder::new(transformers(config), opts);
    for o in sample::objects() {
        b.add(o.etcd_key.as_bytes(), &o.stored).unwrap();
    }
    b.finish()
}

/// The rows as expected-status.json writes them (no key_id, no objects).
fn comparable(report: &StatusReport) -> Value {
    let v = serde_json::to_value(report).unwrap();
    let rows: Vec<Value> = v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let mut r = r.as_object().unwrap().clone();
            r.remove("objects");
            let key = r.remove("key");
            assert_eq!(
                key.as_ref(),
                r.get("key_name"),
                "`key` must equal `key_name`"
            );
            Value::Object(r)
        })
        .collect();
    serde_json::json!({"rows": rows, "totals": v["totals"]})
}

#[test]
fn sample_status_matches_expected_counts() {
    let expected = sample::expected_status();
    for (which, config) in [
        ("before", "config-before.yaml"),
        ("after", "config-after.yaml"),
    ] {
        let want = serde_json::json!({"rows": expected[which]["rows"], "totals": expected[which]["totals"]});
        for verify in [false, true] {
            let r = report(config, verify, false);
            assert_eq!(comparable(&r), want, "{which} verify={verify}");
            assert_eq!(r.exit_class(), ExitClass::NotCurrent);
        }
    }
}

#[test]
fn list_names_every_object_once() {
    let r = report("config-before.yaml", false, true);
    let mut keys: Vec<String> = r
        .rows
        .iter()
        .flat_map(|row| row.objects.clone().unwrap())
        .collect();
    assert_eq!(keys.len(), 2000);
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), 2000);
    let row = r
        .rows
        .iter()
        .find(|r| r.resource == "secrets" && r.provider == "secretbox")
        .unwrap();
    assert_eq!(row.objects.as_ref().unwrap().len() as u64, row.count);
}

#[test]
fn unreadable_values_are_reported_with_their_key() {
    let t = transformers("config-before.yaml");
    let mut b = StatusReportBuilder::new(
        t.clone(),
        ReportOptions {
            verify: true,
            ..Default::default()
        },
    );
    // A secretbox value moved to another key still decrypts (no AAD); a tampered one does not.
    let objects = sample::objects();
    let sb = objects
        .iter()
        .find(|o| o.resource == "secrets" && o.provider == "secretbox")
        .unwrap();
    let mut tampered = sb.stored.clone();
    *tampered.last_mut().unwrap() ^= 1;
    b.add(sb.etcd_key.as_bytes(), &tampered).unwrap();
    // A prefix for a key the config does not have.
    b.add(
        b"/registry/secrets/ns/x",
        b"k8s:enc:aescbc:v1:nokey:0123456789abcdef0123456789abcdef",
    )
    .unwrap();
    // A key that maps to no resource: not covered, not unreadable.
    b.add(b"/registry/secrets", b"k8s\x00").unwrap();
    let r = b.finish();
    assert_eq!(r.totals.unreadable, 2);
    assert_eq!(r.totals.uncovered, 1);
    assert!(r
        .rows
        .iter()
        .any(|r| r.resource == "-" && r.provider == "identity" && !r.covered));
    assert_eq!(r.exit_class(), ExitClass::Unreadable);
    assert_eq!(r.unreadable[0].key, sb.etcd_key);
    assert!(r.unreadable.iter().all(|u| !u.error.is_empty()));
    let row = r.rows.iter().find(|r| r.provider == "secretbox").unwrap();
    assert_eq!(
        (row.unreadable, row.stale, row.key_name.as_deref()),
        (true, None, Some("sb-2022-09"))
    );

    // Without --verify a tampered value is classified by its prefix only.
    let mut b = StatusReportBuilder::new(t, ReportOptions::default());
    b.add(sb.etcd_key.as_bytes(), &tampered).unwrap();
    assert_eq!(b.finish().totals.unreadable, 0);
}

#[test]
fn all_current_exit_class() {
    let t = transformers("config-before.yaml");
    let mut b = StatusReportBuilder::new(t, ReportOptions::default());
    for o in sample::objects() {
        if !o.covered || (o.provider == "aesgcm" && o.key_name.as_deref() == Some("gcm-2025-03")) {
            b.add(o.etcd_key.as_bytes(), &o.stored).unwrap();
        }
    }
    let r = b.finish();
    assert_eq!(r.exit_class(), ExitClass::AllCurrent);
    assert_eq!(
        (r.totals.current, r.totals.uncovered, r.totals.stale),
        (390, 630, 0)
    );
}
