#!/usr/bin/env bash
# One-time set-up on a fresh Debian machine: system packages, then .venv with vitbench.
# Idempotent: a second run only checks. Used by the README's commands and by CI.
set -euo pipefail
cd "$(dirname "$0")"

APT_PACKAGES=(dataset-fashion-mnist slurm-wlm munge)
if ! dpkg -s "${APT_PACKAGES[@]}" >/dev/null 2>&1; then
  echo "install.sh: installing ${APT_PACKAGES[*]} (apt)" >&2
  SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${APT_PACKAGES[@]}" >/dev/null
fi

if [ ! -x .venv/bin/vitbench ] || [ pyproject.toml -nt .venv/.installed ] || [ constraints.txt -nt .venv/.installed ]; then
  echo "install.sh: creating .venv and installing vitbench[dev] at constraints.txt's versions (pip, ~2 min the first time)" >&2
  python3 -m venv .venv
  # pipefail: a failed install (a version conflict) stops here, not at a half-updated .venv
  .venv/bin/pip install -q --disable-pip-version-check -c constraints.txt -e '.[dev]' 2>&1 \
    | { grep -v "^WARNING: Location" || true; }
  .venv/bin/vitbench --version >/dev/null  # fail here, not later, if the install is broken
  touch .venv/.installed
fi
