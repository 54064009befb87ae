"""Extended resources through DRA (KEP-5004), as kube-scheduler and the kubelet handle them (pure).

DEVELOPMENT AND TEST TOOL, the allocator and kubelet stand-ins' part of the feature:

- a DeviceClass serves the extended resource named by its ``spec.extendedResourceName``, and every
  class also the implicit ``deviceclass.resource.kubernetes.io/<class name>``; when two classes
  name the same resource, the one created last wins, and among classes created at the same time
  the first by name;
- for a pod whose containers request such resources (``resources.requests``, which the API
  server defaults from ``limits`` for extended resources), the scheduler makes one special
  ResourceClaim owned by the pod: ``generateName: <pod>-extended-resources-``, the annotation
  ``resource.kubernetes.io/extended-resource-claim: "true"``, one ExactCount request per
  (container, resource) named ``container-<i>-request-<j>`` (i: the container's index in
  initContainers + containers, j: the resource's index in the container's sorted request names),
  requests sorted by name; it records ``pod.status.extendedResourceClaimStatus``
  (``resourceClaimName`` and ``requestMappings`` of containerName, resourceName, requestName);
- an extended resource that no class serves makes the pod unschedulable;
- the kubelet gives a container the CDI devices of the requests its mappings name.

Difference: the real scheduler lets a regular container reuse an init container's request for
the same resource (it runs after it); here every container gets its own request.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from localcluster.apivalidation import is_extended_resource_name
from localcluster.claims import pod_owner

EXTENDED_RESOURCE_CLAIM_ANNOTATION = "resource.kubernetes.io/extended-resource-claim"
IMPLICIT_PREFIX = "deviceclass.resource.kubernetes.io/"


class ExtendedResourceError(Exception):
    """A pod's extended resource request that no DeviceClass serves; the message says which."""


def class_for_resource(classes: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """Extended resource name -> the DeviceClass that serves it."""
    explicit: dict[str, tuple[str, str]] = {}  # resource -> (creationTimestamp, class name)
    out: dict[str, str] = {}
    for dc in classes:
        meta = dc.get("metadata") or {}
        name = str(meta.get("name") or "")
        out[IMPLICIT_PREFIX + name] = name
        resource = (dc.get("spec") or {}).get("extendedResourceName")
        if not resource:
            continue
        created = str(meta.get("creationTimestamp") or "")
        best = explicit.get(resource)
        # RFC 3339 UTC stamps order as strings: the newest wins, then the first name
        if best is None or created > best[0] or (created == best[0] and name < best[1]):
            explicit[resource] = (created, name)
    out.update({resource: name for resource, (_, name) in explicit.items()})
    return out


def container_requests(container: Mapping[str, Any]) -> dict[str, Any]:
    """The container's resource requests as the API server stores them: a request not given
    defaults to its limit."""
    resources = container.get("resources") or {}
    return {**(resources.get("limits") or {}), **(resources.get("requests") or {})}


def _served_by_dra(name: str) -> bool:
    return is_extended_resource_name(name) or name.startswith(IMPLICIT_PREFIX)


def _count(name: str, quantity: Any) -> int:
    text = str(quantity).strip()
    if not text.isdigit():
        raise ExtendedResourceError(
            f"extended resource {name}: quantity {quantity!r} is not a whole number of devices"
        )
    return int(text)


def special_claim(
    pod: Mapping[str, Any], classes: Iterable[Mapping[str, Any]]
) -> tuple[dict[str, Any], list[dict[str, str]]] | None:
    """The ResourceClaim the scheduler makes for the pod's extended resources and the
    requestMappings for its status, or None when the pod requests none. Raises
    ExtendedResourceError for an extended resource that no class serves."""
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    mapping = class_for_resource(classes)
    requests: list[dict[str, Any]] = []
    mappings: list[dict[str, str]] = []
    containers = [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]
    for i, container in enumerate(containers):
        wanted = container_requests(container)
        for j, name in enumerate(sorted(wanted)):
            if not _served_by_dra(name):
                continue
            count = _count(name, wanted[name])
            if count == 0:
                continue
            if name not in mapping:
                raise ExtendedResourceError(
                    f"container {container.get('name')} requests {count} {name}, which no DeviceClass "
                    "serves (spec.extendedResourceName) and no node advertises: the pod cannot be "
                    "scheduled; create the DeviceClass (deploy/kubernetes/deviceclass.yaml has dra.net/nic)"
                )
            request = f"container-{i}-request-{j}"
            requests.append(
                {
                    "name": request,
                    "exactly": {
                        "deviceClassName": mapping[name],
                        "allocationMode": "ExactCount",
                        "count": count,
                    },
                }
            )
            mappings.append({"containerName": str(container.get("name") or ""), "resourceName": name,
                             "requestName": request})  # fmt: skip
    if not requests:
        return None
    claim = {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaim",
        "metadata": {
            "generateName": f"{meta.get('name', 'pod')}-extended-resources-",
            "namespace": meta.get("namespace", "default"),
            "annotations": {EXTENDED_RESOURCE_CLAIM_ANNOTATION: "true"},
            "ownerReferences": [pod_owner(meta)],
        },
        "spec": {"devices": {"requests": sorted(requests, key=lambda r: str(r["name"]))}},
    }
    return claim, mappings


def is_special_claim_of(claim: Mapping[str, Any], pod: Mapping[str, Any]) -> bool:
    """The claim is the one the scheduler made for the pod's extended resources."""
    meta = claim.get("metadata") or {}
    owners = [o.get("uid") for o in meta.get("ownerReferences") or []]
    return (pod.get("metadata") or {}).get("uid") in owners and (meta.get("annotations") or {}).get(
        EXTENDED_RESOURCE_CLAIM_ANNOTATION
    ) == "true"


def container_request_names(pod: Mapping[str, Any], container_name: str) -> tuple[str, list[str]]:
    """(the special claim's name, the requests of it that the container uses), as the kubelet reads
    pod.status.extendedResourceClaimStatus; ("", []) when there is none."""
    status = (pod.get("status") or {}).get("extendedResourceClaimStatus") or {}
    names = [
        str(m.get("requestName"))
        for m in status.get("requestMappings") or []
        if m.get("containerName") == container_name
    ]
    return str(status.get("resourceClaimName") or ""), names
