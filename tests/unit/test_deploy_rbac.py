"""The ClusterRole grants exactly the API calls the driver's code makes, no more and no fewer.

The calls are read from the code (ast): every use of a method of the official client's typed APIs
(ResourceV1Api, CoreV1Api, ...), and every request made by hand with an HTTP method and an /api
path, in dranet/ and services/ (the local cluster stand-in excepted: a
development tool, it runs with its own credentials). Each method's request (HTTP method and path)
comes from the client itself and becomes the RBAC (group, resource, verb) the API server checks; a
list method handed to the client's Watch().stream is a watch."""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

import kubernetes.client as k8s
import yaml

ROOT = Path(__file__).resolve().parents[2]
Grant = tuple[str, str, str]  # (API group, resource[/subresource], verb)

HTTP_VERBS = {"POST": "create", "PUT": "update", "PATCH": "patch"}


def client_requests(classes: set[str]) -> dict[str, set[tuple[str, str]]]:
    """Every method of these typed API classes of the client -> its (HTTP method, resource path
    template); a name two of them share may mean two requests."""
    out: dict[str, set[tuple[str, str]]] = {}
    for cls_name in sorted(classes):
        cls = getattr(k8s, cls_name)
        if not (cls_name.endswith("Api") and inspect.isclass(cls)):
            continue
        for name in dir(cls):
            serialize = getattr(cls, f"_{name}_serialize", None)
            if name.startswith("_") or serialize is None:
                continue
            src = inspect.getsource(serialize)
            method = re.search(r"method='(\w+)'", src)
            path = re.search(r"resource_path='([^']+)'", src)
            if method and path:
                out.setdefault(name, set()).add((method.group(1), path.group(1)))
    return out


def grant_of(http: str, path: str, watch: bool = False) -> Grant:
    """The RBAC attributes of a request: /api/v1/... is the core group ""; /apis/<group>/<version>/...;
    a namespace prefix is dropped; a segment after {name} is a subresource."""
    parts = path.strip("/").split("/")
    group, rest = ("", parts[2:]) if parts[0] == "api" else (parts[1], parts[3:])
    if rest[:2] == ["namespaces", "{namespace}"] and len(rest) > 2:
        rest = rest[2:]
    resource = rest[0] + (f"/{rest[2]}" if len(rest) > 2 else "")
    named = len(rest) > 1
    if http == "GET":
        verb = "watch" if watch else ("get" if named else "list")
    elif http == "DELETE":
        verb = "delete" if named else "deletecollection"
    else:
        verb = HTTP_VERBS[http]
    return group, resource, verb


def raw_requests(tree: ast.AST) -> set[Grant]:
    """Requests made by hand through the client's ApiClient (`request("GET", PATH, ...)`), with the
    path a module constant or an f-string of constants and names ({name}); `watch` in the query
    makes a GET a watch."""
    consts = {
        t.id: n.value.value
        for n in ast.walk(tree)
        if isinstance(n, ast.Assign) and isinstance(n.value, ast.Constant) and isinstance(n.value.value, str)
        for t in n.targets
        if isinstance(t, ast.Name)
    }

    def text(node: ast.AST) -> str:
        if isinstance(node, ast.Constant):
            return str(node.value)
        if isinstance(node, ast.Name):
            return consts.get(node.id, "{name}")
        if isinstance(node, ast.JoinedStr):
            return "".join(text(v.value if isinstance(v, ast.FormattedValue) else v) for v in node.values)
        return "{name}"

    out = set()
    for call in ast.walk(tree):
        if not isinstance(call, ast.Call) or len(call.args) < 2:
            continue
        if not isinstance(call.args[0], ast.Constant):
            continue
        http = call.args[0].value
        if http not in ("GET", "POST", "PUT", "PATCH", "DELETE"):
            continue
        path = text(call.args[1])
        if path.startswith("/api"):
            watch = "'watch'" in ast.dump(call)
            out.add(grant_of(str(http), path, watch=watch))
    return out


def code_trees() -> list[ast.AST]:
    files = [*(ROOT / "dranet").rglob("*.py"), *(ROOT / "services").rglob("*.py")]
    return [
        ast.parse(p.read_text(), str(p)) for p in files if not {"_generated", "localcluster"} & set(p.parts)
    ]


def calls_in_code() -> set[Grant]:
    trees = code_trees()
    # the client's API classes the code names (CoreV1Api, ResourceV1Api, ...)
    classes = {
        n.attr if isinstance(n, ast.Attribute) else n.id
        for tree in trees
        for n in ast.walk(tree)
        if isinstance(n, ast.Attribute | ast.Name)
        and (n.attr if isinstance(n, ast.Attribute) else n.id).endswith("Api")
        and inspect.isclass(getattr(k8s, n.attr if isinstance(n, ast.Attribute) else n.id, None))
    }
    requests = client_requests(classes)
    grants: set[Grant] = set()
    for tree in trees:
        grants |= raw_requests(tree)
        watched = {
            id(call.args[0])
            for call in ast.walk(tree)
            if isinstance(call, ast.Call)
            and isinstance(call.func, ast.Attribute)
            and call.func.attr == "stream"
            and call.args
            and isinstance(call.args[0], ast.Attribute)
        }
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr in requests:
                assert len(requests[node.attr]) == 1, f"{node.attr}: which request? {requests[node.attr]}"
                ((http, template),) = requests[node.attr]
                grants.add(grant_of(http, template, watch=id(node) in watched))
    # Kubernetes 1.36+ also authorizes a claim's status.devices write per driver, on the node the
    # claim is allocated to (DRAResourceClaimGranularStatusAuthorization): the same patch, checked
    # as this verb on resourceclaims/driver.
    if ("resource.k8s.io", "resourceclaims/status", "patch") in grants:
        grants.add(("resource.k8s.io", "resourceclaims/driver", "associated-node:patch"))
    return grants


def granted() -> set[Grant]:
    docs = yaml.safe_load_all((ROOT / "deploy/kubernetes/rbac.yaml").read_text())
    (role,) = [d for d in docs if d and d["kind"] == "ClusterRole"]
    return {
        (g, r, v)
        for rule in role["rules"]
        for g in rule["apiGroups"]
        for r in rule["resources"]
        for v in rule["verbs"]
    }


def test_request_attributes_are_rbacs() -> None:
    rs = "/apis/resource.k8s.io/v1"
    assert grant_of("GET", f"{rs}/namespaces/{{namespace}}/resourceclaims/{{name}}") == (
        "resource.k8s.io",
        "resourceclaims",
        "get",
    )
    assert grant_of("GET", f"{rs}/resourceslices", watch=True)[2] == "watch"
    assert grant_of("PATCH", f"{rs}/namespaces/{{namespace}}/resourceclaims/{{name}}/status")[1:] == (
        "resourceclaims/status",
        "patch",
    )
    assert grant_of("POST", "/api/v1/namespaces/{namespace}/events") == ("", "events", "create")
    assert grant_of("DELETE", f"{rs}/resourceslices/{{name}}")[2] == "delete"


def test_the_cluster_role_grants_exactly_the_calls_the_code_makes() -> None:
    calls, rights = calls_in_code(), granted()
    assert calls, "no API call found in the code: the scan is broken"
    assert not calls - rights, f"the code calls what the ClusterRole does not grant: {sorted(calls - rights)}"
    assert not rights - calls, f"the ClusterRole grants what no code calls: {sorted(rights - calls)}"
