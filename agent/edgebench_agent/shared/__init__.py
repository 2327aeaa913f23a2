"""Code the host and the board both run, and nothing else: numpy and the standard library only.

The host may import the agent through exactly two doors: `edgebench_agent.protocol` (the contract: request,
reply and event shapes) and this package (input generation, output metrics, datasets, file hashing and
atomic writes, the validity verdict). Everything else in edgebench_agent is the board's own business.
Python 3.8 syntax: these modules run on the boards too.
"""
