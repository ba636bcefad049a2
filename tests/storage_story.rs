//! One storage story, written once against the capability traits, run on SQLite always and on
//! PostgreSQL when `IAM_TEST_POSTGRES_URL` is set (each run in a database of its own).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use kaa::storage::{
    Database, HealthStore, NewPolicy, Page, PolicyFilter, PolicySort, PolicyStore, RevisionStore,
    SortOrder, StorageError,
};

fn policy(tenant: &str, name: &str, now: i64) -> NewPolicy {
    NewPolicy {
        tenant: tenant.into(),
        krn: format!("krn:iam:{tenant}::policy/{name}"),
        name: name.into(),
        kind: "identity".into(),
        description: Some(format!("about {name}")),
        statements: r#"[{"effect":"allow","actions":["iam:user:read"],"resources":["*"]}]"#.into(),
        origin: "api".into(),
        now_ms: now,
        resource_krn: None,
    }
}

fn story(db: &Database) {
    db.ping().unwrap();
    assert_eq!(db.revision("t1").unwrap(), 0);

    // Create, read back, duplicate.
    let created = db.insert_policy(&policy("t1", "readers", 1000)).unwrap();
    assert_eq!(created.version, 1);
    assert_eq!(created.created_ms, 1000);
    assert_eq!(db.revision("t1").unwrap(), 1);
    let got = db.get_policy("t1", "krn:iam:t1::policy/readers").unwrap();
    assert_eq!(got, created);
    assert!(matches!(
        db.insert_policy(&policy("t1", "readers", 1001)),
        Err(StorageError::Conflict(_))
    ));
    assert_eq!(
        db.revision("t1").unwrap(),
        1,
        "a failed write changes nothing"
    );

    // Quotes, semicolons and comment markers survive as data (no SQL is built from input).
    let mut nasty = policy("t1", "nasty", 1002);
    nasty.description = Some("x'); DROP TABLE policies; -- \"quoted\" %_\\".into());
    db.insert_policy(&nasty).unwrap();
    let back = db.get_policy("t1", &nasty.krn).unwrap();
    assert_eq!(back.description, nasty.description);

    // Tenants are separate.
    db.insert_policy(&policy("t2", "readers", 1003)).unwrap();
    assert!(matches!(
        db.get_policy("t2", "krn:iam:t1::policy/readers"),
        Err(StorageError::NotFound)
    ));

    // Lists: filter, sort, paging, count.
    for i in 0..5 {
        db.insert_policy(&policy("t1", &format!("p{i}"), 2000 + i))
            .unwrap();
    }
    let all = PolicyFilter {
        tenant: "t1".into(),
        ..Default::default()
    };
    let (page1, count) = db.list_policies(&all, Page { page: 1, size: 3 }).unwrap();
    assert_eq!(count, 7);
    let names: Vec<_> = page1.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["nasty", "p0", "p1"]);
    let (page3, _) = db.list_policies(&all, Page { page: 3, size: 3 }).unwrap();
    assert_eq!(page3.len(), 1);
    let (beyond, count) = db.list_policies(&all, Page { page: 9, size: 3 }).unwrap();
    assert!(beyond.is_empty());
    assert_eq!(count, 7);
    let newest_first = PolicyFilter {
        sort: PolicySort::Created,
        order: SortOrder::Desc,
        ..all.clone()
    };
    let (list, _) = db
        .list_policies(&newest_first, Page { page: 1, size: 2 })
        .unwrap();
    assert_eq!(list[0].name, "p4");
    let by_name = PolicyFilter {
        name_contains: Some("p_".into()),
        ..all.clone()
    };
    let (list, count) = db
        .list_policies(&by_name, Page { page: 1, size: 10 })
        .unwrap();
    assert_eq!(count, 0, "`_` is literal in a name filter, got {list:?}");
    let by_name = PolicyFilter {
        name_contains: Some("ead".into()),
        ..all.clone()
    };
    let (list, _) = db
        .list_policies(&by_name, Page { page: 1, size: 10 })
        .unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].name, "readers");

    // Replace with version checks: a stale writer cannot silently win.
    let rev = db.revision("t1").unwrap();
    let v2 = db
        .replace_policy("t1", &created.krn, Some(1), None, "[]", 3000)
        .unwrap();
    assert_eq!(v2.version, 2);
    assert_eq!(v2.description, None);
    assert_eq!(v2.updated_ms, 3000);
    assert_eq!(v2.created_ms, 1000);
    assert!(matches!(
        db.replace_policy("t1", &created.krn, Some(1), None, "[1]", 3001),
        Err(StorageError::Stale)
    ));
    assert_eq!(db.get_policy("t1", &created.krn).unwrap().statements, "[]");
    assert_eq!(db.revision("t1").unwrap(), rev + 1);
    assert!(matches!(
        db.replace_policy("t1", "krn:iam:t1::policy/none", None, None, "[]", 1),
        Err(StorageError::NotFound)
    ));

    // Delete.
    db.delete_policy("t1", &created.krn).unwrap();
    assert!(matches!(
        db.delete_policy("t1", &created.krn),
        Err(StorageError::NotFound)
    ));
    assert_eq!(db.all_policies().unwrap().len(), 7);
    let revs = db.revisions().unwrap();
    assert_eq!(
        revs.iter().map(|(t, _)| t.as_str()).collect::<Vec<_>>(),
        ["t1", "t2"]
    );
}

#[test]
fn sqlite_story() {
    let dir = support::TempDir::new();
    let settings = support::sqlite_settings(&dir);
    let db = Database::open(&settings).unwrap();
    story(&db);
    drop(db);
    // Reopening applies no migration twice and keeps the data.
    let db = Database::open(&settings).unwrap();
    assert_eq!(db.all_policies().unwrap().len(), 7);
}

#[test]
fn postgres_story() {
    let Some(pg) = support::PgTestDb::create() else {
        return support::skip("postgres_story");
    };
    let db = Database::open(&pg.storage()).unwrap();
    story(&db);
    drop(db);
    let db = Database::open(&pg.storage()).unwrap();
    assert_eq!(db.all_policies().unwrap().len(), 7);
}

#[test]
fn postgres_unreachable_is_one_clear_error() {
    let Some(url) = support::pg_url() else {
        return support::skip("postgres_unreachable_is_one_clear_error");
    };
    let mut s = support::settings_from_url(&url, "kaa_no_such_database");
    let err = Database::open(&kaa::config::StorageSettings::Postgres(s.clone()))
        .err()
        .expect("a missing database fails")
        .to_string();
    assert!(err.contains("kaa_no_such_database"), "{err}");
    assert!(err.contains(&s.host), "{err}");
    assert!(!err.contains('\n'), "{err}");
    s.port = 1; // nothing listens there
    let err = Database::open(&kaa::config::StorageSettings::Postgres(s))
        .err()
        .expect("a closed port fails")
        .to_string();
    assert!(
        err.starts_with("storage unavailable: cannot connect to PostgreSQL at"),
        "{err}"
    );
}
