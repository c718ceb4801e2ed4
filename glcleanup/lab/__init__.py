"""The local incident lab: a real registry plus a simulated GitLab (SQLite state, real Ruby runner,
REST API, deletion worker), all on 127.0.0.1. Used by `glcleanup demo`, `glcleanup lab` and the tests."""
