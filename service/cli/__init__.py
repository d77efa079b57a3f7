"""The `tinyfleet` command: the operator CLI and the composition root (nothing imports it)."""
