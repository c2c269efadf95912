#!/usr/bin/env bash
# Reproduce "litestar-org/litestar-fullstack" in benchmarks/RESULTS.md (real applications).
#
#   run.sh CHECKOUT [VENV] [TESTS]
#
# CHECKOUT  a pristine litestar-fullstack source tree (the runs use copies). Measured on the
#           snapshot of 2026-01-10 (pyproject version 0.3.0; uv.lock: litestar 2.19.0,
#           advanced-alchemy 1.8.2, SQLAlchemy 2.0.45, pytest 9.0.2, anyio 4.12.1)
# VENV      its virtualenv; made when missing: Python 3.11, the app and its test group
#           with the versions of its uv.lock as pip constraints, then this dbtest checkout
#           (`pip install -e REPO[async]`, which changes none of the app's versions:
#           benchmarks/apps/pins_check.py). Default: CHECKOUT/../venv-litestar
# TESTS     what to run (default src/py/tests: the whole suite; src/py/tests/integration/teams
#           is its DB-heavy part)
#
# One PostgreSQL server comes from `dbtest up`. (a) baseline: the app's own conftest with
# baseline.patch (its pytest-databases Docker `postgres_service` replaced by a database per
# xdist worker on that server), dbtest's plugin disabled. (b) dbtest: conftest.patch, the
# server given as DBTEST_URL. Both run the app's own options (-n auto, anyio) without
# coverage (--no-cov: its 65% floor fails any subset), plus the leak probe
# (../async-fastapi-sqlalchemy/leakprobe.py: rows a new connection sees after each test).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../../.." && pwd)
CHECKOUT=$(cd "${1:?usage: run.sh CHECKOUT [VENV] [TESTS]}" && pwd)
VENV=${2:-$(dirname "$CHECKOUT")/venv-litestar}
TESTS=${3:-src/py/tests}
WORK=$(mktemp -d /tmp/litestar-fullstack.XXXXXX)
export DBTEST_CACHE_DIR=${DBTEST_CACHE_DIR:-$WORK/cache}

if [ ! -x "$VENV/bin/pytest" ]; then
  python3.11 -m venv "$VENV"
  python3.11 - "$CHECKOUT/uv.lock" >"$WORK/lock.txt" <<'EOF'
import sys, tomllib
for p in tomllib.load(open(sys.argv[1], "rb"))["package"]:
    if "registry" in p.get("source", {}) and "version" in p:
        print(f'{p["name"]}=={p["version"]}')
EOF
  "$VENV/bin/pip" install -q -c "$WORK/lock.txt" -e "$CHECKOUT" pytest pytest-xdist \
    pytest-mock pytest-cov 'coverage[toml]' 'pytest-databases[postgres]' polyfactory \
    aiosqlite asyncpg
  "$VENV/bin/pip" install -q -e "$REPO[async]"
fi

for variant in baseline dbtest; do
  cp -r "$CHECKOUT" "$WORK/$variant"
  patch=$([ $variant = baseline ] && echo baseline.patch || echo conftest.patch)
  (cd "$WORK/$variant" && patch -s -p1 <"$HERE/$patch")
done

up=$("$VENV/bin/dbtest" up -d --port 0)
URL=$(sed -n 's/^export DBTEST_URL=//p' <<<"$up")
trap '"$VENV/bin/dbtest" down >/dev/null 2>&1 || true' EXIT
export PYTHONPATH=$HERE/../async-fastapi-sqlalchemy LEAKPROBE_URL=$URL
PYTEST=("$VENV/bin/pytest" "$TESTS" -p leakprobe -p no:cacheprovider --no-cov -q)

echo "# $(date -u '+%Y-%m-%d %H:%M UTC') $(nproc) cores; load: $(cut -d' ' -f1-3 /proc/loadavg)"
# side by side: both variants see the same machine load for the whole run
(cd "$WORK/dbtest" && env DBTEST_URL="$URL" LEAKPROBE_OUT="$WORK/dbtest.json" \
  "${PYTEST[@]}" >"$WORK/dbtest.log" 2>&1) &
(cd "$WORK/baseline" && env -u DBTEST_URL BASELINE_URL="$URL" LEAKPROBE_OUT="$WORK/baseline.json" \
  "${PYTEST[@]}" -p no:dbtest >"$WORK/baseline.log" 2>&1) &
wait || true
for variant in baseline dbtest; do
  echo "$variant: $(grep -E '^=+ .* in [0-9.]+s' "$WORK/$variant.log" | tail -1)"
  grep '^leakprobe:' "$WORK/$variant.log" || true
  grep '^FAILED' "$WORK/$variant.log" | sort >"$WORK/$variant.failed" || true
done
echo "failing in dbtest only:"; comm -13 "$WORK/baseline.failed" "$WORK/dbtest.failed"
echo "# load after: $(cut -d' ' -f1-3 /proc/loadavg); logs in $WORK"
# rows in the database the worker's next test uses (the probe sees every database, the other
# worker's mid-test ones too): baseline app_baseline_<worker>; dbtest its worker database and
# the template fresh clones copy (its dbtest_internal bookkeeping aside)
"$VENV/bin/python" - "$WORK" <<'EOF'
import glob, json, sys
for variant in ("baseline", "dbtest"):
    rows = tests = 0
    for part in glob.glob(f"{sys.argv[1]}/{variant}.json.gw*"):
        worker = part.rsplit(".", 1)[1]
        for counts in json.load(open(part)).values():
            tests += 1
            for key, n in counts.items():
                db = key.split(".")[0]
                mine = (db == f"app_baseline_{worker}" if variant == "baseline" else
                        (db.startswith("dbtest_w_") and f"_{worker}_" in db
                         or db.startswith("dbtest_tpl")) and ".dbtest_internal." not in key)
                rows += n if mine else 0
    print(f"{variant}: {rows} rows left for the next test of the same worker, {tests} tests")
EOF
