"""Reference connectors: the connector side of the Genisys protocol.

`kit` is the protocol around a small Backend interface; `process` and `docker` are
backends built on it. See the README section "Connectors".
"""
