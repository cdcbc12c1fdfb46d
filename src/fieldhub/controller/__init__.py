"""``fieldhub controller``: the reference LAN controller (docs/gateway.md).

The smallest program that speaks the LAN protocol: it announces itself, waits for its gateway
over TCP, reports values and events, and runs the actions its YAML file names, each in a child
process under a timeout, at most once per command id. Standard library and PyYAML only, so it
runs on small boards and shows firmware writers the protocol in a few hundred lines.
"""
