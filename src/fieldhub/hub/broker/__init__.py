"""The broker side: the embedded broker and its admission, Mosquitto's dynamic security,
device identities, and which broker the hub runs."""
