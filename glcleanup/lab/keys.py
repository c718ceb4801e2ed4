"""GitLab's registry signing key for the lab (Omnibus: gitlab_rails['registry_key_path']).

GitLab signs a JWT with it for every registry call (Auth::ContainerRegistryAuthenticationService
.full_access_token); `stop-loop --mode finish` refuses when GitLab has no such key, so the lab has one.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

KEY_NAME = "gitlab-registry.key"


def ensure_registry_key(directory: Path) -> Path:
    """The lab's registry key (created once, mode 0600), like /var/opt/gitlab/gitlab-rails/etc/gitlab-registry.key."""
    path = directory / KEY_NAME
    if path.exists():
        return path
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                            serialization.NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    return path
