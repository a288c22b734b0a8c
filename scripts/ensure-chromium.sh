#!/bin/sh
# `make test`'s prerequisite: the web UI's browser tests (tests/e2e/test_ui.py) drive Chromium
# through Playwright, using the system's Chromium (Playwright's own browser downloads are never
# used). Present: nothing to do. Missing, as root with apt-get (Debian, Ubuntu, CI): install it.
# Otherwise: stop, saying how to install it. CHROMIUM names another binary (the tests read it too).
set -eu
chromium=${CHROMIUM:-/usr/bin/chromium}
[ -x "$chromium" ] && exit 0
if [ "$chromium" = /usr/bin/chromium ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "ensure-chromium: /usr/bin/chromium is missing; installing it (apt-get install -y chromium)"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y -q chromium; then
        apt-get update -q   # a fresh machine may have no package lists yet
        apt-get install -y -q chromium
    fi
    [ -x "$chromium" ] && exit 0
    echo "ensure-chromium: apt-get installed chromium, but there is no $chromium" >&2
    exit 1
fi
echo "ensure-chromium: make test needs Chromium at $chromium for the web UI's browser tests." >&2
echo "  Debian/Ubuntu: sudo apt-get install chromium   (or run make test as root: it installs it)" >&2
echo "  elsewhere: install Chromium or Chrome and run: CHROMIUM=/path/to/chromium make test" >&2
exit 1
