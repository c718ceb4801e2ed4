"""glcleanup: find, stop and undo stuck GitLab container-registry deletions."""

__version__ = "0.1.0"
