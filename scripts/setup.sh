#!/usr/bin/env bash
# Installs what glcleanup's lab, demo and tests need on Debian 12, idempotently:
# Debian packages (real registry, nginx, sshd, Ruby + ActiveRecord) and a Python venv in .venv.
# Usage: scripts/setup.sh            (run as root, or with sudo available)
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(docker-registry nginx openssh-server openssh-client ruby ruby-activerecord ruby-sqlite3 ruby-bootsnap postgresql ruby-pg
              openssl curl ca-certificates iproute2 python3 python3-venv docker-compose
              prometheus prometheus-node-exporter)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  # On a systemd machine apt would start nginx on :80, sshd on :22 and the registry on :5000:
  # the lab and tests run their own copies on loopback ports, so keep services from starting.
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
    $SUDO chmod +x /usr/sbin/policy-rc.d
  fi
  echo "setup: installing ${missing[*]}" >&2
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -q >&2
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
fi

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv" >&2
  python3 -m venv .venv
fi
stamp=.venv/.glcleanup-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "setup: installing glcleanup into .venv" >&2
  .venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test,dev]' >&2
  touch "$stamp"
fi
