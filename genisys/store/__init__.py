"""The store: the only package that speaks to Consul, behind one façade, ConsulStore.

    transport.py   py-consul over Tornado; Consul's refusals as the errors below
    values.py      KV entries, transaction operations, parsing what other tools wrote
    tables.py      this replica's computes and desired states, changed in place
    mirror.py      keeps the tables current at the cost of what changed (read it first)
    journal.py     the change journal every Genisys write sets, and its trimming
    watch.py       BoundedWatch: the totals other tools write, at ~10% of a CPU at most
    view.py        PrefixView: a small prefix (the tokens) kept current whole
    sync.py        whether a part is in sync with Consul, and why not
    registry.py    computes, connector claims, retired connectors
    desired.py     totals, placements, lifecycle flags, statuses, events, forgetting
    election.py    catalog registration, TTL check, session, leader lock, term
    tokens.py      API tokens
    failover.py    what failover moved away from a dead compute, per service
    velocity.py    a service's own velocity limits, the times of its last steps
    consulstore.py ConsulStore: the views, subscriptions and transactions, and the above
"""

from genisys.store.consulstore import ConsulStore
from genisys.store.election import CheckMissing, LeaderLock, SessionInvalid
from genisys.store.registry import RetiredConnector
from genisys.store.tables import DesiredRecord
from genisys.store.transport import (
    SERVICE_NAME,
    ConsulError,
    ConsulUnavailable,
    PermissionDenied,
    _denials,
    denied_key,
)
from genisys.store.values import Conflict, NotFound, _kv

__all__ = ["SERVICE_NAME", "CheckMissing", "Conflict", "ConsulError", "ConsulStore",
           "ConsulUnavailable", "DesiredRecord", "LeaderLock", "NotFound", "PermissionDenied",
           "RetiredConnector", "SessionInvalid", "_denials", "_kv", "denied_key"]
