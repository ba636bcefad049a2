//! Lists and paging: every sort, order and size pages the same set consistently.

use super::*;

/// Walk every page of `base` (a list path with its query) at `size`; returns the keys in order.
pub(super) fn walk(
    addr: SocketAddr,
    base: &str,
    size: u32,
    key: &str,
    total: usize,
) -> Vec<String> {
    let sep = if base.contains('?') { '&' } else { '?' };
    let mut out: Vec<String> = Vec::new();
    let pages = total.div_ceil(size as usize).max(1);
    for page in 1..=pages + 1 {
        let path = format!("{base}{sep}page={page}&pageSize={size}");
        let v = expect(&call(addr, "GET", &path, None), 200, &path);
        assert_eq!(v["count"], total as u64, "{path}: count");
        assert_eq!(v["page"], page as u64, "{path}");
        assert_eq!(v["pageSize"], size, "{path}");
        let items = v["data"].as_array().unwrap();
        let want_len = if page <= pages {
            (total - (page - 1) * size as usize).min(size as usize)
        } else {
            0
        };
        assert_eq!(items.len(), want_len, "{path}: items on the page: {v}");
        for it in items {
            let k = it[key].as_str().unwrap().to_string();
            assert!(!out.contains(&k), "{path}: {k} seen on an earlier page");
            out.push(k);
        }
    }
    out
}

/// Paging over a list: every sort and order and several sizes give the same order, pages don't
/// overlap, their union is the whole expected set, descending is ascending reversed.
pub(super) fn check_list(
    addr: SocketAddr,
    base: &str,
    key: &str,
    sorts: &[&str],
    want: &BTreeSet<String>,
) {
    let sorts: Vec<Option<&str>> = std::iter::once(None)
        .chain(sorts.iter().map(|s| Some(*s)))
        .collect();
    for sort in sorts {
        let mut orders: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for order in ["asc", "desc"] {
            let sep = if base.contains('?') { '&' } else { '?' };
            let q = match sort {
                None => format!("{base}{sep}sortOrder={order}"),
                Some(s) => format!("{base}{sep}sort={s}&sortOrder={order}"),
            };
            let full = walk(addr, &q, 50, key, want.len());
            let got: BTreeSet<String> = full.iter().cloned().collect();
            assert_eq!(&got, want, "{q}: the union of the pages");
            for size in [2u32, 7] {
                let paged = walk(addr, &q, size, key, want.len());
                assert_eq!(
                    paged, full,
                    "{q}: pages of {size} in another order than one page"
                );
            }
            orders.insert(order, full);
        }
        let mut rev = orders["asc"].clone();
        rev.reverse();
        assert_eq!(
            rev, orders["desc"],
            "{base} sort {sort:?}: desc is not asc reversed"
        );
    }
}

pub(super) fn krns_of(v: &Value) -> BTreeSet<String> {
    v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["krn"].as_str().unwrap().to_string())
        .collect()
}

pub(super) fn lists_and_paging(addr: SocketAddr, w: &World) {
    let users: BTreeSet<String> = w.users.iter().cloned().collect();
    check_list(
        addr,
        &format!("/api/v1/users?tenantID={T}"),
        "krn",
        &["username", "email", "path", "created", "updated"],
        &users,
    );
    // One page at a time, once.
    assert_eq!(
        walk(addr, &format!("/api/v1/users?tenantID={T}"), 1, "krn", 15),
        walk(addr, &format!("/api/v1/users?tenantID={T}"), 50, "krn", 15)
    );
    let groups: BTreeSet<String> = w.groups.iter().cloned().collect();
    check_list(
        addr,
        &format!("/api/v1/groups?tenantID={T}"),
        "krn",
        &["name", "path", "created", "updated"],
        &groups,
    );
    let mut policies: BTreeSet<String> = w.policies.iter().cloned().collect();
    policies.extend(w.resource_policies.values().cloned());
    check_list(
        addr,
        &format!("/api/v1/policies?tenantID={T}"),
        "krn",
        &["name", "created", "updated"],
        &policies,
    );
    let resources: BTreeSet<String> = w.resources.iter().cloned().collect();
    check_list(
        addr,
        &format!("/api/v1/resources?tenantID={T}"),
        "krn",
        &["krn", "name", "path", "resourceType", "created", "updated"],
        &resources,
    );
    let pools: BTreeSet<String> = w.pools.iter().cloned().collect();
    let p = walk(addr, &format!("/api/v1/pools?tenantID={T}"), 1, "krn", 2);
    assert_eq!(p.into_iter().collect::<BTreeSet<_>>(), pools);

    // Filters.
    let org1: BTreeSet<String> = w
        .user_paths
        .iter()
        .filter(|(_, p)| p.starts_with("/org1"))
        .map(|(u, _)| u.clone())
        .collect();
    let v = expect(
        &call(
            addr,
            "GET",
            &format!("/api/v1/users?tenantID={T}&path=/org1&pageSize=50"),
            None,
        ),
        200,
        "users under /org1",
    );
    assert_eq!(krns_of(&v), org1);
    let docs: BTreeSet<String> = w
        .resources
        .iter()
        .filter(|r| r.contains("::doc/"))
        .cloned()
        .collect();
    let v = expect(
        &call(
            addr,
            "GET",
            &format!("/api/v1/resources?tenantID={T}&resourceType=doc"),
            None,
        ),
        200,
        "docs",
    );
    assert_eq!(krns_of(&v), docs);
    let v = expect(
        &call(
            addr,
            "GET",
            &format!("/api/v1/policies?tenantID={T}&type=resource&pageSize=50"),
            None,
        ),
        200,
        "resource policies",
    );
    assert_eq!(
        krns_of(&v),
        w.resource_policies
            .values()
            .cloned()
            .collect::<BTreeSet<_>>()
    );
    // `%` and `_` in a name filter are literal, a quote or semicolon is just a character.
    let v = expect(
        &call(
            addr,
            "GET",
            &format!("/api/v1/policies?tenantID={T}&name=_&pageSize=50"),
            None,
        ),
        200,
        "name=_",
    );
    assert_eq!(
        krns_of(&v),
        BTreeSet::from([format!("krn:iam:{T}::policy/p_under")]),
        "`_` must match itself only"
    );
    for q in ["%25", "%27", "%3B", "%27%3B--", "p%25"] {
        let path = format!("/api/v1/policies?tenantID={T}&name={q}");
        let v = expect(&call(addr, "GET", &path, None), 200, &path);
        assert_eq!(v["count"], 0, "{path}: {v}");
    }
    let path = format!("/api/v1/users?tenantID={T}&search=%27%3B%20DROP%20TABLE%20users%3B--");
    assert_eq!(
        expect(&call(addr, "GET", &path, None), 200, &path)["count"],
        0
    );
    // pageSize is clamped to the server's maximum, silently.
    let v = expect(
        &call(
            addr,
            "GET",
            &format!("/api/v1/users?tenantID={T}&pageSize=100000"),
            None,
        ),
        200,
        "huge pageSize",
    );
    assert_eq!(v["pageSize"], 50);
    assert_eq!(v["count"], 15);

    // Sub-lists: members, groups of a user, attached policies, with small pages.
    for g in &w.groups {
        let want: BTreeSet<String> = w
            .model
            .groups_of
            .iter()
            .filter(|(_, gs)| gs.contains(g))
            .map(|(u, _)| u.clone())
            .collect();
        let got = walk(
            addr,
            &format!("/api/v1/groups/{}/members", id(g)),
            2,
            "krn",
            want.len(),
        );
        assert_eq!(
            got.into_iter().collect::<BTreeSet<_>>(),
            want,
            "members of {g}"
        );
        let want: BTreeSet<String> = w
            .model
            .policies
            .iter()
            .filter(|(_, p)| p.attached.contains(g))
            .map(|(k, _)| k.clone())
            .collect();
        let got = walk(
            addr,
            &format!("/api/v1/groups/{}/policies", id(g)),
            1,
            "krn",
            want.len(),
        );
        assert_eq!(
            got.into_iter().collect::<BTreeSet<_>>(),
            want,
            "policies of {g}"
        );
    }
    for u in &w.users {
        let want: BTreeSet<String> = w.model.groups_of.get(u).cloned().unwrap_or_default();
        let got = walk(
            addr,
            &format!("/api/v1/users/{}/groups", id(u)),
            1,
            "krn",
            want.len(),
        );
        assert_eq!(
            got.into_iter().collect::<BTreeSet<_>>(),
            want,
            "groups of {u}"
        );
        let want: BTreeSet<String> = w
            .model
            .policies
            .iter()
            .filter(|(_, p)| p.attached.contains(u))
            .map(|(k, _)| k.clone())
            .collect();
        let got = walk(
            addr,
            &format!("/api/v1/users/{}/policies", id(u)),
            2,
            "krn",
            want.len(),
        );
        assert_eq!(
            got.into_iter().collect::<BTreeSet<_>>(),
            want,
            "policies of {u}"
        );
    }
    for p in &w.pools {
        let want: BTreeSet<String> = w
            .model
            .policies
            .iter()
            .filter(|(_, x)| x.pools.contains(p))
            .map(|(k, _)| k.clone())
            .collect();
        let got = walk(
            addr,
            &format!("/api/v1/pools/{}/policies", id(p)),
            1,
            "krn",
            want.len(),
        );
        assert_eq!(
            got.into_iter().collect::<BTreeSet<_>>(),
            want,
            "policies of {p}"
        );
        let v = expect(
            &call(addr, "GET", &format!("/api/v1/pools/{}", id(p)), None),
            200,
            "pool",
        );
        let members: BTreeSet<String> = strings(&v["data"]["resourceIDs"]).into_iter().collect();
        let want: BTreeSet<String> = w
            .model
            .pools_of
            .iter()
            .filter(|(_, ps)| ps.contains(p))
            .map(|(r, _)| raw_id(r))
            .collect();
        assert_eq!(members, want, "members of {p}");
    }
}
