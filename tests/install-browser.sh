#!/usr/bin/env bash
# Install what the browser test needs that pip cannot: Debian's Chromium.  (Playwright's Python
# package drives it; the pages' JavaScript comes with the site, from book/_static/vendor.)
set -euo pipefail
if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "Chromium is missing and this is not a Debian/Ubuntu system: install Chromium with your" \
       "system's package manager, then run the tests again." >&2
  exit 1
fi
if [ "$(id -u)" -ne 0 ]; then
  # Never stop in the middle of the test command to ask for a password.
  echo "Chromium is missing and installing it needs root: run 'sudo apt-get install -y chromium'" \
       "once, then run the tests again." >&2
  exit 1
fi
echo "Installing Chromium for the browser test (apt-get) ..."
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
command -v chromium
