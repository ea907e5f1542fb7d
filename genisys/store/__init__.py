"""The store: the only package that speaks to Consul, behind one façade, ConsulStore.

    transport.py   py-consul over Tornado; Consul's refusals as the errors below
    values.py      KV entries, transaction operations, parsing what other tools wrote
    view.py        PrefixView: a local copy of a prefix kept current by blocking queries
    registry.py    computes, connector claims, retired connectors
    desired.py     totals, placements, lifecycle flags, statuses, events, forgetting
    election.py    catalog registration, TTL check, session, leader lock, term
    tokens.py      API tokens
    velocity.py    a service's own velocity limits, the times of its last steps
    consulstore.py ConsulStore: the views, subscriptions and transactions, and the above
"""

from genisys.store.consulstore import ConsulStore
from genisys.store.desired import DesiredRecord
from genisys.store.election import CheckMissing, LeaderLock, SessionInvalid
from genisys.store.registry import RetiredConnector
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
