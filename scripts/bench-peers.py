#!/usr/bin/env python3
"""The peers' side of scripts/bench-peers.sh: translate one tenant exported by
`iam generate --export` into Open Policy Agent, OpenFGA and cedar-agent models, load OpenFGA, and
check every peer's answers against IAM's on the generator's sample requests. Standard library only.

    bench-peers.py translate EXPORT EXPECTED OUT      write OUT/opa, OUT/cedar, OUT/fga and the
                                                      peers' wrk request files OUT/<peer>.*.jsonl
    bench-peers.py fga-load URL OUT                   create a store, write the model and tuples,
                                                      write OUT/fga.single.jsonl, OUT/fga.batch.jsonl
                                                      and OUT/fga.path
    bench-peers.py check PEER URL OUT EXPECTED [N]    ask the first N single samples (all by default)
                                                      and the first CHECK_BATCHES batch samples (20);
                                                      print agreement

The statement semantics every translation must keep (IAM's, src/policy): a user is decided by
the statements of the policies attached to it, to its groups and to their ancestors; a statement
applies when one of its actions and one of its resources match; a pattern ending in `*` matches by
prefix, any other by equality; an applying deny wins over any allow (explicitDeny), no applying
statement is an implicitDeny.
"""
import http.client
import json
import os
import sys
import time
import urllib.parse

# ------------------------------------------------------------------------------ common


def load(path):
    with open(path) as f:
        return json.load(f)


def dump(path, value):
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w") as f:
        json.dump(value, f, separators=(",", ":"))


def write_lines(path, bodies):
    with open(path, "w") as f:
        for b in bodies:
            f.write(json.dumps(b, separators=(",", ":")))
            f.write("\n")


def samples(expected):
    """(single, batch): lists of {principal, action, resources, expected}."""
    return expected["single"], expected["batch"]


def action_up(pattern):
    """The next wider action pattern: `epr:endpoint:read` -> `epr:endpoint:*` -> `epr:*` -> `*`."""
    if pattern == "*":
        return None
    base = pattern[:-2] if pattern.endswith(":*") else pattern
    i = base.rfind(":")
    return "*" if i < 0 else base[:i] + ":*"


def action_chain(action):
    out = [action]
    while True:
        up = action_up(out[-1])
        if up is None:
            return out
        out.append(up)


def resource_chain(krn):
    """A concrete KRN and every wider pattern of the generated shapes, narrowest first:
    `krn:epr:t::endpoint/d3/t1/e42`, `…/d3/t1/*`, `…/d3/*`, `krn:epr:t::endpoint/*`,
    `krn:epr:t::*`, `krn:epr:t:*`."""
    head, sep, path = krn.partition("::")
    if not sep:
        return [krn]
    segs = path.split("/")
    out = [krn]
    for i in range(len(segs) - 1, 0, -1):
        out.append(head + "::" + "/".join(segs[:i]) + "/*")
    out.append(head + "::*")
    out.append(head + ":*")
    return out


def matches(value, pattern):
    return value.startswith(pattern[:-1]) if pattern.endswith("*") else value == pattern


# ------------------------------------------------------------------------------ OPA

REGO = r"""# IAM's statement semantics in Rego, over the tenant as data (data.iam):
#   users[user KRN]          = [group KRN]          direct memberships
#   parents[group KRN]       = [parent group KRN]   ([] for a top-level group)
#   exact[principal][action] = [statement]          statements attached to a user or group, under
#   wild[principal][pattern] = [statement]          each of their actions: exact ones, and those
#                                                   ending in `*`
# A statement is {"effect", "resources"} (its actions are the keys it is filed under). Keying by
# principal and action lets a decision look up the few statements that can apply instead of
# scanning every statement of the user's policies.
# Input: IAM's evaluate body {"principal", "action", "resources": [KRN]}.
# Output: data.iam.decisions, one of allow / explicitDeny / implicitDeny per resource.
package iam

# The user and every group it is in, directly or through a child group.
principals contains input.principal

principals contains g if {
	some g in graph.reachable(data.iam.parents, data.iam.users[input.principal])
}

# Statements of those principals with an action matching the input's: equal, or a pattern
# ending in `*` that is a prefix of it.
candidates contains s if {
	some p in principals
	some s in data.iam.exact[p][input.action]
}

candidates contains s if {
	some p in principals
	some pattern, list in data.iam.wild[p]
	startswith(input.action, trim_suffix(pattern, "*"))
	some s in list
}

# A resource pattern ending in `*` matches by prefix, any other by equality.
match(value, pattern) if {
	endswith(pattern, "*")
	startswith(value, trim_suffix(pattern, "*"))
}

match(value, pattern) if value == pattern

# Deny wins over allow; nothing applying is an implicit deny.
outcome(resource) := "explicitDeny" if {
	some s in candidates
	s.effect == "deny"
	some r in s.resources
	match(resource, r)
} else := "allow" if {
	some s in candidates
	s.effect == "allow"
	some r in s.resources
	match(resource, r)
} else := "implicitDeny"

decisions := [outcome(r) | some r in input.resources]
"""


def translate_opa(tenant, out):
    users = {u["krn"]: u["groups"] for u in tenant["users"]}
    parents = {g["krn"]: ([g["parent"]] if g["parent"] else []) for g in tenant["groups"]}
    exact, wild = {}, {}
    for p in tenant["policies"]:
        for i, s in enumerate(p["statements"]):
            # The id keeps two equal statements of different policies apart in the set.
            st = {"id": f"{p['name']}.{i}", "effect": s["effect"], "resources": s["resources"]}
            for a in s["actions"]:
                index = wild if a.endswith("*") else exact
                index.setdefault(p["attachedTo"], {}).setdefault(a, []).append(st)
    dump(os.path.join(out, "opa", "iam", "data.json"),
         {"users": users, "parents": parents, "exact": exact, "wild": wild})
    with open(os.path.join(out, "opa", "policy.rego"), "w") as f:
        f.write(REGO)


def opa_body(sample, resources=None):
    return {"input": {"principal": sample["principal"], "action": sample["action"],
                      "resources": resources if resources is not None else sample["resources"]}}


# ------------------------------------------------------------------------------ Cedar


def cedar_str(s):
    return json.dumps(s)  # KRNs and actions hold no `"` or `\`; json.dumps quotes as Cedar does


def cedar_condition(patterns):
    terms = []
    for p in patterns:
        if p.endswith("*"):
            terms.append("context.resource like " + cedar_str(p))
        else:
            terms.append("context.resource == " + cedar_str(p))
    return " || ".join(terms)


def translate_cedar(tenant, out):
    """One Cedar policy per statement: the principal scope is the attached user (`==`) or group
    (`in`, so members of child groups are covered through the entity hierarchy), the action scope
    the statement's actions (wildcards are action groups: `epr:endpoint:read` is in
    `epr:endpoint:*`, in `epr:*`, in `*`), and the resource patterns a `when` on the request's
    KRN in the context (`like` for a trailing `*`). Deny is `forbid`, which Cedar lets win."""
    groups = {g["krn"] for g in tenant["groups"]}
    policies = []
    for p in tenant["policies"]:
        target = p["attachedTo"]
        scope = ("principal in Group::" if target in groups else "principal == User::") + cedar_str(target)
        for i, s in enumerate(p["statements"]):
            effect = "forbid" if s["effect"] == "deny" else "permit"
            actions = ", ".join("Action::" + cedar_str(a) for a in s["actions"])
            policies.append({
                "id": f"{p['name']}.{i}",
                "content": f"{effect}({scope}, action in [{actions}], resource) "
                           f"when {{ {cedar_condition(s['resources'])} }};",
            })
    entities = []
    for u in tenant["users"]:
        entities.append({"uid": {"type": "User", "id": u["krn"]}, "attrs": {},
                         "parents": [{"type": "Group", "id": g} for g in u["groups"]]})
    for g in tenant["groups"]:
        entities.append({"uid": {"type": "Group", "id": g["krn"]}, "attrs": {},
                         "parents": [{"type": "Group", "id": g["parent"]}] if g["parent"] else []})
    actions = set()
    for a in tenant["actions"]:
        actions.update(action_chain(a))
    for p in tenant["policies"]:
        for s in p["statements"]:
            for a in s["actions"]:
                actions.update(action_chain(a))
    for a in sorted(actions):
        up = action_up(a)
        entities.append({"uid": {"type": "Action", "id": a}, "attrs": {},
                         "parents": [{"type": "Action", "id": up}] if up else []})
    dump(os.path.join(out, "cedar", "policies.json"), policies)
    dump(os.path.join(out, "cedar", "entities.json"), entities)
    return len(policies)


def cedar_body(principal, action, resource):
    return {"principal": "User::" + cedar_str(principal), "action": "Action::" + cedar_str(action),
            "resource": "Resource::" + cedar_str(resource), "context": {"resource": resource}}


# ------------------------------------------------------------------------------ OpenFGA


def fga_id(s):
    """An OpenFGA object id may not hold `:`, `#` or white space: percent-encode them (and `*`)."""
    return s.replace("%", "%25").replace(":", "%3A").replace("#", "%23").replace("*", "%2A")


def fga_rel(pattern):
    """A relation name for an action pattern: `epr:endpoint:*` -> `epr_endpoint_any`."""
    return "any" if pattern == "*" else pattern.replace(":*", "_any").replace(":", "_")


def rewrite_union(children):
    return children[0] if len(children) == 1 else {"union": {"child": children}}


def computed(rel):
    return {"computedUserset": {"relation": rel}}


def from_parent(rel):
    return {"tupleToUserset": {"tupleset": {"relation": "parent"}, "computedUserset": {"relation": rel}}}


def translate_fga(tenant, out):
    """Relationship tuples and an authorization model (schema 1.1).

    * group membership: `group:G#member@user:U`; nesting: `group:P#member@group:C#member`;
    * resources are objects in a tree of the KRN patterns the generator uses: every concrete
      resource (the export lists them all) has a `parent` tuple to `…/d/t/*`, which has one to
      `…/d/*`, then `…::type/*`, `krn:svc:t::*`, `krn:svc:t:*`;
    * a statement becomes one tuple per (action, resource pattern) on relation `a_<action>`
      (allow) or `x_<action>` (deny) of the pattern's object, for its user or `group#member`;
    * resource wildcards are `g_<action>: a_<action> or g_<action> from parent`;
    * action wildcards: by default (FGA_ACTION_WILDCARDS=expand) a wildcard action is written as
      one tuple per concrete action of the tenant it covers, so an action added later is not
      covered until the tuples are written again; with FGA_ACTION_WILDCARDS=relations they are
      relation unions instead (`a_epr_endpoint_read` includes `a_epr_endpoint_any`, which includes
      `a_epr_any`, which includes `a_any`), exact but about 4x slower per check, since every
      check then walks every (action pattern, resource level) pair;
    * `can_<action>` is `g_<action> but not y_<action>` (deny wins, by exclusion).
    What does not translate: OpenFGA answers allowed or not, so explicit and implicit deny are
    one answer; a `*` that does not end a path segment of these shapes (none in a generated
    tenant) has no object to hang on; resources must exist as objects with their parent tuples
    before they can be checked (IAM decides on any KRN)."""
    groups = {g["krn"] for g in tenant["groups"]}
    expand = os.environ.get("FGA_ACTION_WILDCARDS", "expand") == "expand"
    patterns = set()
    for a in tenant["actions"]:
        patterns.update(action_chain(a))
    tuples = set()

    def principal(krn):
        return f"group:{fga_id(krn)}#member" if krn in groups else f"user:{fga_id(krn)}"

    resource_patterns = set()
    for p in tenant["policies"]:
        who = principal(p["attachedTo"])
        for s in p["statements"]:
            for a in s["actions"]:
                patterns.update(action_chain(a))
            for r in s["resources"]:
                resource_patterns.add(r)
            kind = "x_" if s["effect"] == "deny" else "a_"
            acts = s["actions"]
            if expand:
                acts = sorted({c for a in acts for c in tenant["actions"] if matches(c, a)})
            for a in acts:
                for r in s["resources"]:
                    tuples.add((who, kind + fga_rel(a), "resource:" + fga_id(r)))
    for u in tenant["users"]:
        for g in u["groups"]:
            tuples.add((f"user:{fga_id(u['krn'])}", "member", f"group:{fga_id(g)}"))
    for g in tenant["groups"]:
        if g["parent"]:
            tuples.add((f"group:{fga_id(g['krn'])}#member", "member", f"group:{fga_id(g['parent'])}"))
    # The resource tree: every concrete resource and every pattern level above it.
    tree = set()
    for krn in tenant["resources"]:
        chain = resource_chain(krn)
        for child, parent in zip(chain, chain[1:]):
            tree.add((child, parent))
    known = {c for c, _ in tree} | {p for _, p in tree}
    # A pattern outside the tree (none in a generated tenant) gets its tuples but no object
    # below it: it matches nothing, and the check reports the disagreements.
    untranslated = sum(1 for r in resource_patterns if r not in known)
    for child, parent in tree:
        tuples.add((f"resource:{fga_id(parent)}", "parent", f"resource:{fga_id(child)}"))

    concrete = sorted(set(tenant["actions"]))
    direct = [{"type": "user"}, {"type": "group", "relation": "member"}]
    relations = {"parent": {"this": {}}}
    meta = {"parent": {"directly_related_user_types": [{"type": "resource"}]}}
    if expand:
        patterns = set(tenant["actions"])
    for pat in sorted(patterns):
        up = None if expand else action_up(pat)
        for kind in ("a_", "x_"):
            children = [{"this": {}}] + ([computed(kind + fga_rel(up))] if up else [])
            relations[kind + fga_rel(pat)] = rewrite_union(children)
            meta[kind + fga_rel(pat)] = {"directly_related_user_types": direct}
    for a in concrete:
        r = fga_rel(a)
        relations["g_" + r] = rewrite_union([computed("a_" + r), from_parent("g_" + r)])
        relations["y_" + r] = rewrite_union([computed("x_" + r), from_parent("y_" + r)])
        relations["can_" + r] = {"difference": {"base": computed("g_" + r), "subtract": computed("y_" + r)}}
    model = {
        "schema_version": "1.1",
        "type_definitions": [
            {"type": "user"},
            {"type": "group", "relations": {"member": {"this": {}}},
             "metadata": {"relations": {"member": {"directly_related_user_types": direct}}}},
            {"type": "resource", "relations": relations, "metadata": {"relations": meta}},
        ],
    }
    dump(os.path.join(out, "fga", "model.json"), model)
    with open(os.path.join(out, "fga", "tuples.jsonl"), "w") as f:
        for u, rel, obj in sorted(tuples):
            f.write(json.dumps({"user": u, "relation": rel, "object": obj}, separators=(",", ":")))
            f.write("\n")
    return len(tuples), untranslated


def fga_key(principal, action, resource):
    return {"user": "user:" + fga_id(principal), "relation": "can_" + fga_rel(action),
            "object": "resource:" + fga_id(resource)}


def fga_bodies(model_id, single, batch):
    s = [{"authorization_model_id": model_id, "tuple_key": fga_key(x["principal"], x["action"], x["resources"][0])}
         for x in single]
    b = [{"authorization_model_id": model_id,
          "checks": [{"tuple_key": fga_key(x["principal"], x["action"], r), "correlation_id": str(i)}
                     for i, r in enumerate(x["resources"])]}
         for x in batch]
    return s, b


# ------------------------------------------------------------------------------ HTTP


class Client:
    def __init__(self, url):
        u = urllib.parse.urlsplit(url)
        self.host, self.port = u.hostname, u.port
        self.conn = http.client.HTTPConnection(self.host, self.port, timeout=600)

    def call(self, method, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if data is not None else {}
        for attempt in (1, 2):
            try:
                self.conn.request(method, path, body=data, headers=headers)
                r = self.conn.getresponse()
                text = r.read()
                return r.status, (json.loads(text) if text else None)
            except (http.client.HTTPException, ConnectionError):
                self.conn.close()
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=600)
                if attempt == 2:
                    raise


def fga_load(url, out):
    c = Client(url)
    status, store = c.call("POST", "/stores", {"name": "bench"})
    if status != 201 and status != 200:
        sys.exit(f"openfga: create store answered {status}: {store}")
    sid = store["id"]
    status, m = c.call("POST", f"/stores/{sid}/authorization-models", load(os.path.join(out, "fga", "model.json")))
    if status != 201 and status != 200:
        sys.exit(f"openfga: write model answered {status}: {m}")
    mid = m["authorization_model_id"]
    with open(os.path.join(out, "fga", "tuples.jsonl")) as f:
        tuples = [json.loads(line) for line in f if line.strip()]
    per = int(os.environ.get("FGA_TUPLES_PER_WRITE", "100"))
    for i in range(0, len(tuples), per):
        status, r = c.call("POST", f"/stores/{sid}/write",
                           {"authorization_model_id": mid, "writes": {"tuple_keys": tuples[i:i + per]}})
        if status != 200:
            sys.exit(f"openfga: write of tuples {i}..{i + per} answered {status}: {r}")
    expected = load(os.path.join(out, "expected.json"))
    single, batch = samples(expected)
    s, b = fga_bodies(mid, single, batch)
    write_lines(os.path.join(out, "fga.single.jsonl"), s)
    write_lines(os.path.join(out, "fga.batch.jsonl"), b)
    with open(os.path.join(out, "fga.path"), "w") as f:
        f.write(f"/stores/{sid}\n")
    print(f"openfga: store {sid}, model {mid}, {len(tuples)} tuples written")


# ------------------------------------------------------------------------------ checking


def ask(peer, c, out, sample, resources):
    """The peer's outcomes for one principal and action over `resources`; `allowed`/`denied` for
    a peer that does not tell explicit from implicit deny."""
    p, a = sample["principal"], sample["action"]
    if peer == "iam":
        st, r = c.call("POST", "/api/v1/evaluate?explain=true", {"principal": p, "action": a, "resources": resources})
        if st not in (200, 403):
            raise RuntimeError(f"iam answered {st}: {r}")
        return [d["outcome"] for d in r["decisions"]]
    if peer == "opa":
        st, r = c.call("POST", "/v1/data/iam/decisions", opa_body(sample, resources))
        if st != 200 or "result" not in r:
            raise RuntimeError(f"opa answered {st}: {r}")
        return r["result"]
    if peer == "cedar":
        outs = []
        for res in resources:
            st, r = c.call("POST", "/v1/is_authorized", cedar_body(p, a, res))
            if st != 200:
                raise RuntimeError(f"cedar-agent answered {st}: {r}")
            if r["diagnostics"]["errors"]:
                raise RuntimeError(f"cedar-agent evaluation errors: {r['diagnostics']['errors']}")
            if r["decision"] == "Allow":
                outs.append("allow")
            else:
                outs.append("explicitDeny" if r["diagnostics"]["reason"] else "implicitDeny")
        return outs
    if peer == "fga":
        path = open(os.path.join(out, "fga.path")).read().strip()
        mid = json.loads(open(os.path.join(out, "fga.single.jsonl")).readline())["authorization_model_id"]
        if len(resources) == 1:
            st, r = c.call("POST", path + "/check",
                           {"authorization_model_id": mid, "tuple_key": fga_key(p, a, resources[0])})
            if st != 200:
                raise RuntimeError(f"openfga answered {st}: {r}")
            return ["allowed" if r["allowed"] else "denied"]
        outs = []
        limit = int(os.environ.get("FGA_BATCH_MAX", "100"))
        for i in range(0, len(resources), limit):
            part = resources[i:i + limit]
            st, r = c.call("POST", path + "/batch-check", {
                "authorization_model_id": mid,
                "checks": [{"tuple_key": fga_key(p, a, res), "correlation_id": str(k)} for k, res in enumerate(part)]})
            if st != 200:
                raise RuntimeError(f"openfga batch-check answered {st}: {r}")
            for k in range(len(part)):
                one = r["result"][str(k)]
                if one.get("error"):
                    outs.append("error: " + json.dumps(one["error"]))
                else:
                    outs.append("allowed" if one.get("allowed") else "denied")
        return outs
    raise SystemExit(f"unknown peer {peer}")


def agrees(got, want):
    if got in ("allowed", "denied"):
        return (got == "allowed") == (want == "allow")
    return got == want


def check(peer, url, out, expected_path, limit=None):
    expected = load(expected_path)
    single, batch = samples(expected)
    if limit is not None:
        single = single[:limit]
    batch = batch[:int(os.environ.get("CHECK_BATCHES", "20"))]
    c = Client(url)
    total = agree = 0
    shown = []
    started = time.time()
    for kind, items in (("single", single), ("batch", batch)):
        if peer == "cedar" and kind == "batch":
            continue  # no batch request: the single samples cover it
        for x in items:
            got = ask(peer, c, out, x, x["resources"])
            for res, g, w in zip(x["resources"], got, x["expected"]):
                total += 1
                if agrees(g, w):
                    agree += 1
                elif len(shown) < 5:
                    shown.append(f"  {kind}: {x['principal']} {x['action']} {res}: IAM {w}, {peer} {g}")
    took = time.time() - started
    three = peer in ("iam", "opa", "cedar")
    how = "outcome (allow / explicitDeny / implicitDeny)" if three else "allowed or not"
    ref = "the generator's reference evaluation" if peer == "iam" else "IAM's"
    print(f"{peer}: {agree}/{total} decisions agree with {ref} on the {how} ({total - agree} disagree; {took:.1f} s)")
    for line in shown:
        print(line)
    return total - agree


# ------------------------------------------------------------------------------ main


def translate(export_path, expected_path, out):
    tenant = load(export_path)
    expected = load(expected_path)
    os.makedirs(out, exist_ok=True)
    dump(os.path.join(out, "expected.json"), expected)
    single, batch = samples(expected)
    translate_opa(tenant, out)
    write_lines(os.path.join(out, "opa.single.jsonl"), [opa_body(x) for x in single])
    write_lines(os.path.join(out, "opa.batch.jsonl"), [opa_body(x) for x in batch])
    n_cedar = translate_cedar(tenant, out)
    write_lines(os.path.join(out, "cedar.single.jsonl"),
                [cedar_body(x["principal"], x["action"], x["resources"][0]) for x in single])
    n_tuples, untranslated = translate_fga(tenant, out)
    statements = sum(len(p["statements"]) for p in tenant["policies"])
    print(f"translated {len(tenant['users'])} users, {len(tenant['groups'])} groups, "
          f"{len(tenant['policies'])} policies, {statements} statements: "
          f"OPA data + 1 Rego module; {n_cedar} Cedar policies; {n_tuples} OpenFGA tuples"
          + (f" ({untranslated} resource patterns outside the generated shapes, approximated)" if untranslated else ""))


def main(argv):
    if len(argv) >= 4 and argv[0] == "translate":
        translate(argv[1], argv[2], argv[3])
    elif len(argv) >= 3 and argv[0] == "fga-load":
        fga_load(argv[1], argv[2])
    elif len(argv) >= 5 and argv[0] == "check":
        limit = int(argv[5]) if len(argv) > 5 else None
        bad = check(argv[1], argv[2], argv[3], argv[4], limit)
        return 0 if bad == 0 else 3
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
