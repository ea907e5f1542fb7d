"""The leader's reconcile engine (README "How the leader reconciles").

- reconciler.py: lead(term): the compute workers, the change subscription, and the
  service-level work (placement fixes, status records, history, forgetting, full pass).
- workers.py: a compute worker: its keyed queue, observations and orders.
- calls.py: the calls to one compute's connector, timed and contained (no store).
- observations.py: what the leader knows of each (service, compute) pair in a term.
The pure decisions are genisys.plan's.
"""
