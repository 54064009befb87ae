"""The dra service's Prometheus metrics, in one place."""

from __future__ import annotations

from dranet.observability.metrics import counter, gauge, histogram

# One histogram for both calls, named for neither: `op` says which (prepare, unprepare).
CLAIM_SECONDS = histogram(
    "dranet_dra_claim_seconds",
    "Time per claim of NodePrepareResources (op=prepare) or NodeUnprepareResources (op=unprepare)",
    ["op"],
)
CLAIM_RESULTS = counter(
    "dranet_dra_claims_total", "Claims handled by NodePrepare/NodeUnprepare, by outcome", ["op", "outcome"]
)
PREPARED_CLAIMS = gauge("dranet_dra_prepared_claims", "Claims currently prepared on this node")
CHECKPOINT_WRITE_SECONDS = histogram("dranet_dra_checkpoint_write_seconds", "Time to write the checkpoint")
CHECKPOINT_CORRUPT = counter(
    "dranet_dra_checkpoint_corrupt_total", "Checkpoint files found corrupt and moved aside"
)
STATUS_WRITES = counter(
    "dranet_dra_status_writes_total", "ResourceClaim status writes, by outcome", ["outcome"]
)
EVENT_WRITES = counter(
    "dranet_dra_events_total",
    "Kubernetes Events for failures, by outcome",
    ["outcome"],
)
