"""Prometheus metrics, defined once for the whole provider.

Under gunicorn the server sets ``PROMETHEUS_MULTIPROC_DIR`` before workers start
so ``/metrics`` aggregates every worker; elsewhere the default registry is used.
Label values are bounded (operation names, outcomes, channel names): never user input.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

SOAP_CALLS = Counter("st_provider_soap_calls_total", "SOAP calls answered", ["operation", "outcome"])
SOAP_LATENCY = Histogram(
    "st_provider_soap_call_seconds", "SOAP call latency", ["operation"], buckets=LATENCY_BUCKETS
)
PREVIOUS_PASSWORD_CALLS = Counter(
    "st_provider_previous_password_calls_total",
    "Calls authorised by ST_PROVIDER_PREVIOUS_WEB_SERVICE_PASSWORD (drop it once this stops growing)",
)
SOAP_FAULTS = Counter("st_provider_soap_faults_total", "Requests answered with a fault or 4xx", ["reason"])
AUTHPW_BLOCKS = Counter(
    "st_provider_authpw_blocks_total",
    "Client addresses blocked for too many wrong Web Service Passwords (each refused request "
    'is counted in st_provider_soap_faults_total{reason="authpw_blocked"})',
)

LDAP_LATENCY = Histogram(
    "st_provider_ldap_seconds", "Directory operation latency", ["operation"], buckets=LATENCY_BUCKETS
)
LDAP_ERRORS = Counter("st_provider_ldap_errors_total", "Directory errors", ["kind"])
LOGINS = Counter("st_provider_logins_total", "Login outcomes", ["operation", "outcome"])

RULE_ERRORS = Counter("st_provider_rule_errors_total", "Rules skipped because they raised", ["rule"])
RULES_RELOADED = Counter("st_provider_rules_reloads_total", "Times a process reloaded the rule set")

EVENTS_RECEIVED = Counter("st_provider_events_received_total", "NotifyEventFired calls stored", ["duplicate"])
DELIVERIES = Counter("st_provider_deliveries_total", "Delivery attempts by outcome", ["channel", "outcome"])
DELIVERY_LATENCY = Histogram(
    "st_provider_delivery_attempt_seconds", "Partner call latency", ["channel"], buckets=LATENCY_BUCKETS
)
QUEUE_DEPTH = Gauge(
    "st_provider_queue_depth", "Deliveries not yet finished", ["status"], multiprocess_mode="livemax"
)
OLDEST_PENDING = Gauge(
    "st_provider_oldest_pending_seconds", "Age of the oldest pending delivery", multiprocess_mode="livemax"
)
CHANNEL_PAUSED = Gauge(
    "st_provider_channel_paused",
    "1 while a channel is paused by a partner",
    ["channel"],
    multiprocess_mode="livemax",
)

JOURNAL_WRITTEN = Counter("st_provider_journal_written_total", "Call journal entries written")
JOURNAL_DROPPED = Counter(
    "st_provider_journal_dropped_total",
    "Call journal entries dropped (queue_full: the database could not keep up; storage: it failed; "
    "error: a bug)",
    ["reason"],
)
PURGED_ROWS = Counter("st_provider_purged_rows_total", "Rows removed by retention", ["table"])
