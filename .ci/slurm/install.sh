#!/usr/bin/env bash
# Install a single-node SLURM (controller + compute daemon + munge) from the distribution's
# packages, for the real-SLURM integration test (tests/workflow/test_slurm.py). Debian/Ubuntu only.
# Exits non-zero (without touching anything) where apt-get is missing or fails; CI then goes on
# and the SLURM test skips, saying why.
set -euo pipefail
if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null \
        && command -v sbatch >/dev/null; then
    echo "slurm: already installed ($(sbatch --version))"
    exit 0
fi
if ! command -v apt-get >/dev/null; then
    echo "slurm: apt-get not available; cannot install SLURM" >&2
    exit 1
fi
SUDO=""
if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then SUDO="sudo -n"; else
        echo "slurm: not root and no password-less sudo; cannot install SLURM" >&2
        exit 1
    fi
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends slurmctld slurmd slurm-client munge
echo "slurm: installed ($(sbatch --version))"
