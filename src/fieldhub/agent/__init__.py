"""The fieldhub agent: runs on a Raspberry Pi in the device, reads its hardware units, keeps
what it reports in an outbox until the hub stored it, and runs actions the hub asks for."""
