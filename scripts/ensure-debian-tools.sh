#!/usr/bin/env bash
# Installs the Debian packages the test suite starts or calls: dovecot-imapd (required: the IMAP tests run a
# private dovecot) and docker-compose (optional: validates docker-compose.yml). Does nothing when present.
set -euo pipefail

missing=()
command -v dovecot >/dev/null 2>&1 || [ -x /usr/sbin/dovecot ] || missing+=(dovecot-imapd)
command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
[ ${#missing[@]} -eq 0 ] && exit 0

if ! command -v apt-get >/dev/null 2>&1; then
  echo "note: no apt-get; install ${missing[*]} by hand" >&2
  exit 0
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
# The tests start their own dovecot on a free port; whether the package's service runs does not matter.
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >/dev/null 2>&1 || true
for pkg in "${missing[@]}"; do
  if ! $SUDO apt-get install -y -qq --no-install-recommends "$pkg" >/dev/null 2>&1; then
    if [ "$pkg" = dovecot-imapd ]; then
      echo "error: dovecot-imapd could not be installed; the IMAP tests need it" >&2
      exit 1
    fi
    echo "note: $pkg could not be installed; the check that uses it will be skipped" >&2
  fi
done
