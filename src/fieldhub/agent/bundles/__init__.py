"""Signed bundles on the device: install, trial, confirm or roll back (docs/bundles.md).

``host`` (the agent's side, across restarts), ``install`` (judge in memory, then write and
switch), ``download``, ``checks`` (what only the device can judge), ``installed`` (the active
area), ``journal`` (each step on disk, and the tests' crash points).
"""
