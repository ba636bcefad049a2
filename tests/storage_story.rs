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
        pools: Vec::new(),
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
        .replace_policy("t1", &created.krn, Some(1), None, "[]", None, 3000)
        .unwrap();
    assert_eq!(v2.version, 2);
    assert_eq!(v2.description, None);
    assert_eq!(v2.updated_ms, 3000);
    assert_eq!(v2.created_ms, 1000);
    assert!(matches!(
        db.replace_policy("t1", &created.krn, Some(1), None, "[1]", None, 3001),
        Err(StorageError::Stale)
    ));
    assert_eq!(db.get_policy("t1", &created.krn).unwrap().statements, "[]");
    assert_eq!(db.revision("t1").unwrap(), rev + 1);
    assert!(matches!(
        db.replace_policy("t1", "krn:iam:t1::policy/none", None, None, "[]", None, 1),
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

/// Eight threads write policies at once, so writes share grouped transactions; every tenth name
/// is written by two threads. Each write gets its own answer (one `Conflict` per duplicate, which
/// touches no other write of its group), its own revision, and every kept row is there.
fn concurrent_writes(db: &std::sync::Arc<Database>) {
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let db = std::sync::Arc::clone(db);
            std::thread::spawn(move || {
                let mut out = Vec::new();
                for i in 0..40 {
                    // Threads 0 and 1 both write the names `d<i>` of every tenth i.
                    let name = if i % 10 == 0 && t < 2 {
                        format!("d{i}")
                    } else {
                        format!("w{t}-{i}")
                    };
                    let r = db.insert_policy(&policy("tc", &name, 1));
                    let rev = db.take_committed_revision("tc");
                    out.push((name, r.map(|rec| rec.krn), rev));
                }
                out
            })
        })
        .collect();
    let results: Vec<_> = threads
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    let ok: Vec<_> = results.iter().filter(|(_, r, _)| r.is_ok()).collect();
    let conflicts = results
        .iter()
        .filter(|(_, r, _)| matches!(r, Err(StorageError::Conflict(_))))
        .count();
    assert_eq!(conflicts, 4, "one conflict per duplicated name");
    assert_eq!(ok.len(), 8 * 40 - 4);
    let mut revs: Vec<i64> = ok.iter().map(|(_, _, rev)| rev.unwrap()).collect();
    revs.sort_unstable();
    revs.dedup();
    assert_eq!(revs.len(), ok.len(), "each write has a revision of its own");
    assert_eq!(*revs.last().unwrap(), db.revision("tc").unwrap());
    let (stored, count) = db
        .list_policies(
            &PolicyFilter {
                tenant: "tc".into(),
                ..Default::default()
            },
            Page {
                page: 1,
                size: 1000,
            },
        )
        .unwrap();
    assert_eq!(count as usize, ok.len());
    for (name, _, _) in &ok {
        assert!(stored.iter().any(|p| &p.name == name), "{name} lost");
    }
}

#[test]
fn sqlite_concurrent_writes() {
    let dir = support::TempDir::new();
    let db = std::sync::Arc::new(Database::open(&support::sqlite_settings(&dir)).unwrap());
    concurrent_writes(&db);
}

#[test]
fn postgres_concurrent_writes() {
    let Some(pg) = support::PgTestDb::create() else {
        return support::skip("postgres_concurrent_writes");
    };
    let db = std::sync::Arc::new(Database::open(&pg.storage()).unwrap());
    concurrent_writes(&db);
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

mod directory {
    use kaa::storage::{
        AttachmentStore, Database, GroupFilter, GroupRecord, GroupStore, NewPolicy, Page,
        PolicyStore, PoolRecord, PoolStore, ResourceFilter, ResourcePatch, ResourceRecord,
        ResourceStore, RevisionStore, SnapshotStore, StorageError, UserFilter, UserPatch,
        UserRecord, UserStore,
    };

    fn user(name: &str, email: Option<&str>) -> UserRecord {
        UserRecord {
            tenant: "t1".into(),
            krn: format!("krn:iam:t1::user/{name}"),
            username: name.into(),
            path: "/".into(),
            email: email.map(String::from),
            first_name: Some("O'Brien; --".into()),
            last_name: None,
            enabled: false,
            auth_id: None,
            password_hash: Some("$argon2id$x".into()),
            metadata: "{}".into(),
            required_actions: "[]".into(),
            version: 1,
            created_ms: 10,
            updated_ms: 10,
            pools: Vec::new(),
        }
    }

    fn group(path: &[&str], name: &str) -> GroupRecord {
        let mut krn = "krn:iam:t1::group".to_string();
        for p in path {
            krn.push('/');
            krn.push_str(p);
        }
        let parent = if path.is_empty() {
            None
        } else {
            Some(krn.clone())
        };
        krn.push('/');
        krn.push_str(name);
        GroupRecord {
            tenant: "t1".into(),
            krn,
            name: name.into(),
            display_name: None,
            parent_krn: parent,
            path: format!("/{}", path.join("/")),
            metadata: "{}".into(),
            version: 1,
            created_ms: 10,
            updated_ms: 10,
            pools: Vec::new(),
        }
    }

    fn policy(name: &str) -> NewPolicy {
        NewPolicy {
            tenant: "t1".into(),
            krn: format!("krn:iam:t1::policy/{name}"),
            name: name.into(),
            kind: "identity".into(),
            description: None,
            statements: "[]".into(),
            origin: "api".into(),
            now_ms: 1,
            resource_krn: None,
            pools: Vec::new(),
        }
    }

    fn resource(name: &str) -> ResourceRecord {
        ResourceRecord {
            tenant: "t1".into(),
            krn: format!("krn:epr:t1::endpoint/{name}"),
            service: "epr".into(),
            resource_type: "endpoint".into(),
            name: name.into(),
            path: "/".into(),
            display_name: None,
            description: None,
            enabled: true,
            metadata: "{}".into(),
            version: 1,
            created_ms: 1,
            updated_ms: 1,
            pools: Vec::new(),
        }
    }

    const P1: Page = Page { page: 1, size: 50 };

    pub fn story(db: &Database) {
        // Users: unique username and e-mail, all-or-nothing memberships.
        db.insert_policy(&policy("readers")).unwrap();
        let g = db.insert_group(&group(&[], "dev")).unwrap();
        let java = db.insert_group(&group(&["dev"], "java")).unwrap();
        assert!(matches!(
            db.insert_group(&group(&["nope"], "x")),
            Err(StorageError::NotFound)
        ));
        let a = db
            .insert_user(
                &user("alice", Some("a@x.io")),
                std::slice::from_ref(&java.krn),
                &["krn:iam:t1::policy/readers".to_string()],
            )
            .unwrap();
        assert_eq!(a.first_name.as_deref(), Some("O'Brien; --"));
        assert!(!a.enabled);
        assert!(matches!(
            db.insert_user(&user("alice", None), &[], &[]),
            Err(StorageError::Conflict(_))
        ));
        let mut dup_mail = user("al2", Some("a@x.io"));
        dup_mail.krn = "krn:iam:t1::user/al2".into();
        assert!(matches!(
            db.insert_user(&dup_mail, &[], &[]),
            Err(StorageError::Conflict(_))
        ));
        let rev = db.revision("t1").unwrap();
        assert!(matches!(
            db.insert_user(
                &user("carol", None),
                &["krn:iam:t1::group/ghost".into()],
                &[]
            ),
            Err(StorageError::NotFound)
        ));
        assert!(matches!(
            db.get_user("t1", "krn:iam:t1::user/carol"),
            Err(StorageError::NotFound)
        ));
        assert_eq!(
            db.revision("t1").unwrap(),
            rev,
            "the failed insert left nothing behind"
        );
        db.insert_user(&user("bob", None), &[], &[]).unwrap();

        let (list, n) = db
            .list_users(
                &UserFilter {
                    tenant: "t1".into(),
                    search: Some("ali".into()),
                    ..Default::default()
                },
                P1,
            )
            .unwrap();
        assert_eq!((n, list[0].username.as_str()), (1, "alice"));
        let u = db
            .update_user(
                "t1",
                &a.krn,
                &UserPatch {
                    enabled: Some(true),
                    email: Some(None),
                    ..Default::default()
                },
                Some(1),
                20,
            )
            .unwrap();
        assert!(u.enabled && u.email.is_none() && u.version == 2);
        assert!(matches!(
            db.update_user("t1", &a.krn, &UserPatch::default(), Some(1), 21),
            Err(StorageError::Stale)
        ));

        // Groups and members.
        let (members, n) = db.list_members("t1", &java.krn, P1).unwrap();
        assert_eq!((n, members[0].username.as_str()), (1, "alice"));
        db.add_members("t1", &g.krn, &["krn:iam:t1::user/bob".into()])
            .unwrap();
        db.add_members("t1", &g.krn, &["krn:iam:t1::user/bob".into()])
            .unwrap();
        assert!(matches!(
            db.add_members("t1", &g.krn, &["krn:iam:t1::user/ghost".into()]),
            Err(StorageError::NotFound)
        ));
        let (groups, _) = db.groups_of_user("t1", "krn:iam:t1::user/bob", P1).unwrap();
        assert_eq!(groups.len(), 1);
        let (top, n) = db
            .list_groups(
                &GroupFilter {
                    tenant: "t1".into(),
                    parent: Some(None),
                    ..Default::default()
                },
                P1,
            )
            .unwrap();
        assert_eq!((n, top[0].name.as_str()), (1, "dev"));
        assert!(matches!(
            db.delete_groups("t1", std::slice::from_ref(&g.krn)),
            Err(StorageError::Conflict(_))
        ));

        // Attachments.
        db.attach("t1", &g.krn, &["krn:iam:t1::policy/readers".into()])
            .unwrap();
        assert!(matches!(
            db.attach("t1", &g.krn, &["krn:iam:t1::policy/ghost".into()]),
            Err(StorageError::NotFound)
        ));
        assert_eq!(
            db.targets_of("t1", "krn:iam:t1::policy/readers").unwrap(),
            [g.krn.clone(), a.krn.clone()]
        );
        let (ps, _) = db.policies_of("t1", &a.krn, P1).unwrap();
        assert_eq!(ps[0].name, "readers");
        db.detach("t1", &g.krn, &["krn:iam:t1::policy/readers".into()])
            .unwrap();

        // Resources with a resource policy, pools.
        let mut rp = policy("e1");
        rp.krn = "krn:iam:t1::policy/resource/epr/endpoint/e1".into();
        rp.kind = "resource".into();
        rp.resource_krn = Some("krn:epr:t1::endpoint/e1".into());
        db.insert_resource(&resource("e1"), Some(&rp), &[]).unwrap();
        db.insert_resource(&resource("e2"), None, &[]).unwrap();
        assert_eq!(
            db.resource_policy("t1", "krn:epr:t1::endpoint/e1")
                .unwrap()
                .krn,
            rp.krn
        );
        let r = db
            .update_resource(
                "t1",
                "krn:epr:t1::endpoint/e2",
                &ResourcePatch {
                    enabled: Some(false),
                    ..Default::default()
                },
                None,
                5,
            )
            .unwrap();
        assert!(!r.enabled);
        let (rs, n) = db
            .list_resources(
                &ResourceFilter {
                    tenant: "t1".into(),
                    enabled: Some(true),
                    ..Default::default()
                },
                P1,
            )
            .unwrap();
        assert_eq!((n, rs[0].name.as_str()), (1, "e1"));
        let pool = PoolRecord {
            tenant: "t1".into(),
            krn: "krn:iam:t1::pool/fleet".into(),
            name: "fleet".into(),
            display_name: None,
            description: None,
            version: 1,
            created_ms: 1,
            updated_ms: 1,
        };
        db.insert_pool(
            &pool,
            &[
                "krn:epr:t1::endpoint/e1".into(),
                "krn:epr:t1::endpoint/e2".into(),
            ],
        )
        .unwrap();
        let (pools, _) = db
            .list_pools("t1", None, Some("krn:epr:t1::endpoint/e2"), None, P1)
            .unwrap();
        assert_eq!(pools.len(), 1);

        // The snapshot the index is built from.
        let snap = db.tenant_snapshot("t1").unwrap();
        assert_eq!(snap.revision, db.revision("t1").unwrap());
        assert_eq!(snap.policies.len(), 2);
        assert_eq!(
            snap.attachments,
            [("krn:iam:t1::policy/readers".to_string(), a.krn.clone())]
        );
        assert_eq!(snap.memberships.len(), 2);
        assert_eq!(snap.pool_members.len(), 2);

        // Deleting a resource takes its policy and memberships.
        db.delete_resources("t1", &["krn:epr:t1::endpoint/e1".into()])
            .unwrap();
        assert!(matches!(
            db.resource_policy("t1", "krn:epr:t1::endpoint/e1"),
            Err(StorageError::NotFound)
        ));
        assert_eq!(
            db.pool_members("t1", &pool.krn).unwrap(),
            ["krn:epr:t1::endpoint/e2"]
        );

        // Deleting a user takes its memberships and attachments; purge empties the tenant.
        db.delete_users("t1", std::slice::from_ref(&a.krn)).unwrap();
        let snap = db.tenant_snapshot("t1").unwrap();
        assert!(snap.attachments.is_empty());
        assert_eq!(snap.memberships.len(), 1);
        db.purge_tenant("t1").unwrap();
        let snap = db.tenant_snapshot("t1").unwrap();
        assert!(
            snap.policies.is_empty() && snap.memberships.is_empty() && snap.pool_members.is_empty()
        );
        assert!(matches!(
            db.get_group("t1", &java.krn),
            Err(StorageError::NotFound)
        ));
    }
}

#[test]
fn sqlite_directory_story() {
    let dir = support::TempDir::new();
    let db = Database::open(&support::sqlite_settings(&dir)).unwrap();
    directory::story(&db);
}

#[test]
fn postgres_directory_story() {
    let Some(pg) = support::PgTestDb::create() else {
        return support::skip("postgres_directory_story");
    };
    let db = Database::open(&pg.storage()).unwrap();
    directory::story(&db);
}
