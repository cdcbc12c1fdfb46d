"""hello.check: the broken bundle's health check, which always fails.

A bundle's health action must pass after the install, or the device rolls back by itself
(docs/bundles.md). This one stands for a release that breaks something on the device: the
canary of its rollout rolls back, and the rollout aborts before any other device gets it.
"""

raise SystemExit("hello 2.0.0 cannot reach its sensor: health check failed")
