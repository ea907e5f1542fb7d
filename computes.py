# Compute definitions written to Consul at start-up when absent. This file is read, not
# executed: only top-level assignments of dict literals are allowed.
local = {"name": "local", "connector": "http://localhost:7051"}
