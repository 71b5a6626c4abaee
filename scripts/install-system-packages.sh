#!/usr/bin/env bash
# Installs the Debian packages slipstream's local stack and build need, if missing.
# Idempotent and quiet when everything is present; needs root (or sudo) otherwise.
set -euo pipefail

declare -A need=(
  [redis-server]=redis-server
  [prometheus]=prometheus
  [promtool]=prometheus
  [prometheus-alertmanager]=prometheus-alertmanager
  [java]=openjdk-17-jre-headless
  [mvn]=maven
  # Builds the compiled request reader (setup.py); without it the worker falls back to fastavro.
  [gcc]=gcc
)
missing=()
for bin in "${!need[@]}"; do
  command -v "$bin" >/dev/null 2>&1 || missing+=("${need[$bin]}")
done
[ ${#missing[@]} -eq 0 ] && exit 0
mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)

sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 || {
    echo "error: missing Debian packages: ${missing[*]}; run as root: apt-get install ${missing[*]}" >&2
    exit 1
  }
  sudo="sudo"
fi

echo "installing Debian packages: ${missing[*]}"
# Keep the packages' own services from starting: the stack runs its servers itself,
# on its own ports, and a system redis on 6379 would take the stack's port.
added_policy=0
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' | $sudo tee /usr/sbin/policy-rc.d >/dev/null
  $sudo chmod +x /usr/sbin/policy-rc.d
  added_policy=1
fi
trap '[ $added_policy -eq 1 ] && $sudo rm -f /usr/sbin/policy-rc.d' EXIT
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "installed: ${missing[*]}"
