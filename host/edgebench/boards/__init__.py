"""Where runs happen: the inventory and its targets (targets), the transports that reach a board (transport/:
this machine, SSH), the board itself (board: the agent put there, uploads by hash, detached runs), labgrid farms
(farm), the agent's one-file bundle (agent_bundle), the compatibility gate (compat), several boards at once
(threads).

boards/ may import models/ (what a model needs of a board) and the shared modules at the top; never stages/,
results/, the CLI or the API -- tests/test_architecture.py checks.
"""
