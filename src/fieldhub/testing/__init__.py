"""Helpers for tests and benchmarks: real server processes, never mocks of them.

Brokers and databases are the parts we can least afford to fake: a mock broker does not drop
messages for slow subscribers and a mock database does not reject a bad query. The helpers here
start the Debian-packaged programs (see ``fieldhub.testing.servers``) so tests exercise the same
software that runs in the field.
"""
