"""Prometheus metrics of syncs, token refreshes and the schedule.

The counters and histograms live in prometheus-client's default registry of
the process: ``crmflow serve`` exposes them at ``/metrics`` (with the
schedule's gauges, computed at scrape time), ``crmflow worker
--metrics-port P`` on a port of its own. Labels are low-cardinality on
purpose (kind, provider, status): never an account, a user or an address.

=========================================  ==============================================
``crmflow_sync_runs_total``                 syncs by ``kind`` (calendar, mail), ``provider``, ``status``
``crmflow_sync_duration_seconds``           how long they took (histogram), by ``kind``, ``provider``
``crmflow_sync_items_total``                items by ``kind``, ``provider``, ``change`` (imported,
                                            exported, updated, deleted)
``crmflow_sync_conflicts_total``            conflicts a calendar sync found, by ``provider``
``crmflow_token_refresh_failures_total``    failed OAuth refreshes by ``provider``, ``reason``
                                            (reconnect, transient, error)
``crmflow_webhook_deliveries_total``        push notifications by ``provider``, ``result``
                                            (accepted, handshake, replayed, unknown)
``crmflow_sync_due_accounts``               accounts whose scheduled sync is due (queue depth)
``crmflow_sync_lag_seconds``                how long the longest-waiting due account has waited
``crmflow_sync_failing_accounts``           accounts that failed 5 times in a row or more
=========================================  ==============================================
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

SYNC_RUNS = Counter(
    "crmflow_sync_runs",
    "Calendar and mailbox syncs, by how they ended.",
    ["kind", "provider", "status"],
)
SYNC_DURATION = Histogram(
    "crmflow_sync_duration_seconds",
    "How long a sync took.",
    ["kind", "provider"],
    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
)
SYNC_ITEMS = Counter(
    "crmflow_sync_items",
    "Events and messages a sync imported, exported, updated or deleted.",
    ["kind", "provider", "change"],
)
SYNC_CONFLICTS = Counter(
    "crmflow_sync_conflicts",
    "Conflicts a calendar sync found (both sides changed).",
    ["provider"],
)
TOKEN_REFRESH_FAILURES = Counter(
    "crmflow_token_refresh_failures",
    "OAuth token refreshes that failed.",
    ["provider", "reason"],
)
WEBHOOK_DELIVERIES = Counter(
    "crmflow_webhook_deliveries",
    "Push notifications received, by provider and what was made of them "
    "(accepted, handshake, replayed, unknown).",
    ["provider", "result"],
)
DUE_ACCOUNTS = Gauge(
    "crmflow_sync_due_accounts",
    "Accounts whose scheduled sync is due now (the queue's depth).",
)
SYNC_LAG = Gauge(
    "crmflow_sync_lag_seconds",
    "How long the longest-waiting due account has been due, in seconds.",
)
FAILING_ACCOUNTS = Gauge(
    "crmflow_sync_failing_accounts",
    "Accounts whose scheduled syncs failed 5 times in a row or more.",
)


def record_sync(
    kind: str,
    provider: str,
    status: str,
    seconds: float,
    items: dict[str, int],
    conflicts: int = 0,
) -> None:
    """Count one finished sync (manual or scheduled)."""
    SYNC_RUNS.labels(kind, provider, status).inc()
    SYNC_DURATION.labels(kind, provider).observe(max(0.0, seconds))
    for change, count in items.items():
        if count:
            SYNC_ITEMS.labels(kind, provider, change).inc(count)
    if conflicts:
        SYNC_CONFLICTS.labels(provider).inc(conflicts)
