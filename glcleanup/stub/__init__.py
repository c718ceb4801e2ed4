"""The registry stub, Python side: deploy on/off, render its config, preflight and verify, read status."""
