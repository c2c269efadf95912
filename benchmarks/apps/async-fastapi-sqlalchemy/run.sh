#!/usr/bin/env bash
# Reproduce "Real async application: rhoboro/async-fastapi-sqlalchemy" (benchmarks/RESULTS.md).
#
#   run.sh CHECKOUT [VENV] [RUNS]
#
# CHECKOUT  a pristine checkout of github.com/rhoboro/async-fastapi-sqlalchemy at
#           6c08827241e9737487905c62d8834edc2a0da8e7 (left untouched: the runs use copies)
# VENV      its virtualenv; created when missing (Python 3.13, the app's uv.lock pins, this
#           dbtest checkout installed editable). Default: CHECKOUT/../venv-async-fastapi-sqlalchemy
# RUNS      timed runs per variant (default 3; the first dbtest run builds the template)
#
# One PostgreSQL server comes from `dbtest up`. (a) baseline: the app's own conftest, its
# DB_URI pointed at that server, dbtest's plugin disabled. (b) dbtest: conftest.patch applied,
# DBTEST_URL pointed at the same server, the app's DB_URI left at its test.env default (a
# server that does not exist here: nothing may use it). Both run the app's own pytest options
# (coverage, pytest-randomly with a fixed seed) plus leakprobe.py.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../../.." && pwd)
CHECKOUT=$(cd "${1:?usage: run.sh CHECKOUT [VENV] [RUNS]}" && pwd)
VENV=${2:-$(dirname "$CHECKOUT")/venv-async-fastapi-sqlalchemy}
RUNS=${3:-3}
SEED=${SEED:-12345}
PY=${PYTHON:-python3.13}
WORK=$(mktemp -d /tmp/async-fastapi-sqlalchemy.XXXXXX)
export DBTEST_CACHE_DIR=${DBTEST_CACHE_DIR:-$WORK/cache}

if [ ! -x "$VENV/bin/pytest" ]; then
  "$PY" -m venv "$VENV"
  # the app's uv.lock pins of what its tests import; its pyproject wants Python 3.14
  "$VENV/bin/pip" install -q sqlalchemy==2.0.51 asyncpg==0.31.0 fastapi==0.141.1 \
    starlette==1.3.1 anyio==4.14.2 pydantic==2.13.4 pydantic-core==2.46.4 \
    pydantic-settings==2.14.2 alembic==1.18.5 httpx==0.28.1 psycopg2-binary==2.9.12 \
    eqassertions==0.4 pytest==9.1.1 pytest-cov==7.1.0 pytest-env==1.7.0 \
    pytest-mock==3.15.1 pytest-randomly==4.1.0 python-multipart greenlet
  "$VENV/bin/pip" install -q -e "$REPO[async]"
fi

cp -r "$CHECKOUT" "$WORK/baseline"
cp -r "$CHECKOUT" "$WORK/dbtest"
(cd "$WORK/dbtest" && patch -s -p1 < "$HERE/conftest.patch")
rm -rf "$WORK"/*/.git

up=$("$VENV/bin/dbtest" up -d --port 0)
URL=$(sed -n 's/^export DBTEST_URL=//p' <<<"$up")
trap '"$VENV/bin/dbtest" down >/dev/null 2>&1 || true' EXIT
# the app appends "/test" to DB_URI: no database name here
APP_URI=$(sed -E 's#^postgresql\+psycopg://#postgresql+asyncpg://#; s#/postgres$##' <<<"$URL")

export PYTHONPATH=$HERE LEAKPROBE_URL=$URL
PYTEST=("$VENV/bin/pytest" -p leakprobe -p no:cacheprovider -p randomly "--randomly-seed=$SEED")

one() {  # variant run -> "variant run passed failed errors wall_s pytest_s leaked_rows template"
  local variant=$1 run=$2 out=$WORK/$1-$2 t0 t1
  t0=$(date +%s.%N)
  if [ "$variant" = baseline ]; then
    (cd "$WORK/baseline" && env -u DBTEST_URL DB_URI="$APP_URI" LEAKPROBE_OUT="$out.json" \
      "${PYTEST[@]}" -p no:dbtest >"$out.log" 2>&1) || true
  else
    (cd "$WORK/dbtest" && env -u DB_URI DBTEST_URL="$URL" LEAKPROBE_OUT="$out.json" \
      "${PYTEST[@]}" >"$out.log" 2>&1) || true
  fi
  t1=$(date +%s.%N)
  local last; last=$(grep -E '^=+ .* in [0-9.]+s' "$out.log" | tail -1)
  count() { grep -oE "[0-9]+ $1" <<<"$last" | grep -oE '^[0-9]+' || echo 0; }
  local own; own=$(grep -oE 'in [0-9.]+s' <<<"$last" | grep -oE '[0-9.]+' || echo '?')
  local tpl; tpl=$(grep -oE '\): (built|reused)' "$out.log" | cut -c4- || true)
  printf '%s %s %s %s %s %.2f %s %s %s\n' "$variant" "$run" "$(count passed)" "$(count failed)" \
    "$(count error)" "$(echo "$t1 - $t0" | bc)" "$own" \
    "$("$VENV/bin/python" -c 'import json,sys; print(json.load(open(sys.argv[1]))["rows_after_tests"])' "$out.json" 2>/dev/null || echo '?')" \
    "${tpl:--}"
}

echo "# $(date -u '+%Y-%m-%d %H:%M UTC') $(uname -m) $(nproc) cores; load: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# variant run passed failed errors wall_s pytest_s leaked_rows template   (logs in $WORK)"
for i in $(seq 1 "$RUNS"); do
  one baseline "$i"
  one dbtest "$i"
done
echo "# load after: $(cut -d' ' -f1-3 /proc/loadavg)"
