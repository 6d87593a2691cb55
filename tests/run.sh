#!/usr/bin/env bash
# The test command of the README: installs what the tests need, then runs them.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install --quiet --disable-pip-version-check -e '.[dev]'
# The browser tests drive Debian's chromium through Playwright (never a downloaded browser);
# the PgBouncer test runs Debian's pgbouncer in front of the test PostgreSQL; promtool (Debian's
# prometheus) checks the shipped alerting rules.
MISSING=()
[ -x /usr/bin/chromium ] || MISSING+=(chromium)
command -v pgbouncer >/dev/null || [ -x /usr/sbin/pgbouncer ] || MISSING+=(pgbouncer)
command -v promtool >/dev/null || MISSING+=(prometheus)
# The scale-out tests make hosts in network namespaces with iproute2's `ip` (and util-linux's `unshare`).
command -v ip >/dev/null || [ -x /usr/sbin/ip ] || MISSING+=(iproute2)
if [ ${#MISSING[@]} -gt 0 ]; then
    SUDO=$([ "$(id -u)" -eq 0 ] || echo sudo)
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${MISSING[@]}" >/dev/null
fi
# Imports point down the layers of pyproject.toml, with no cycle; a broken contract names the import.
lint-imports --no-cache
# ruff (configured in pyproject.toml): pyflakes, bugbear, pyupgrade and import order.
ruff check .
# The documentation site builds with no warning: a broken link, anchor or missing page fails here
# (never --quiet: it hides the warnings that strict mode counts).
SITE_DIR=$(mktemp -d)
trap 'rm -rf "$SITE_DIR"' EXIT
NO_MKDOCS_2_WARNING=1 mkdocs build --strict --site-dir "$SITE_DIR"
rm -rf "$SITE_DIR"
# The tests start hundreds of Fleet processes (workers, schedulers, CLI calls): compiled once
# here, each imports Fleet's bytecode instead of compiling its sources again (an environment
# with PYTHONDONTWRITEBYTECODE set would otherwise make every process compile them).
unset PYTHONDONTWRITEBYTECODE
python3 -m compileall -q -j 0 actors admin core db fleet scheduler tests benchmarks
exec python3 -m pytest "$@"
