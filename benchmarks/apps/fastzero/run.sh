#!/usr/bin/env bash
# Reproduce "dunossauro/fastapi-do-zero" (fast_zero, the course's final app: sync SQLAlchemy 2
# + FastAPI, `Session(engine)` in a dependency) in benchmarks/RESULTS.md (real applications).
#
#   run.sh CHECKOUT [VENV] [RUNS]
#
# CHECKOUT  the app: codigo_das_aulas/13 of github.com/dunossauro/fastapi-do-zero at
#           78f823eafe6bc28c7e320dd4890a0070ee53e3e3 (2025-02-09, the last commit where the
#           final lesson's code is sync; later ones made it async). Left untouched: the runs
#           use copies.
# VENV      its virtualenv; made when missing: Python 3.11, the app's dependencies and its
#           dev group's test tools with the versions of its poetry.lock as pip constraints,
#           then this dbtest checkout (`pip install -e REPO[factories]`: with [async],
#           pytest-asyncio would move its pytest 8.3.4 pin; benchmarks/apps/pins_check.py).
#           Default: CHECKOUT/../venv-fastzero
# RUNS      timed runs per variant, alternated (default 3)
#
# One PostgreSQL server comes from `dbtest up`. (a) baseline: the app's own conftest with
# baseline.patch (its testcontainers PostgresContainer, Docker, replaced by a database on that
# server; the per-test create_all/drop_all kept), dbtest's plugin disabled. (b) dbtest:
# conftest.patch (its `session` fixture is dbtest's `db`, savepoint isolation with
# reset_sequences = true, since three tests assert `id == 1`), the server as DBTEST_URL. Both run the app's own pytest
# options (pyproject addopts) without coverage; the leak probe (../probe.py) runs once each,
# the timed runs without it.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=${REPO:-$(cd "$HERE/../../.." && pwd)}
APPS=${APPS:-$REPO/benchmarks/apps}
CHECKOUT=$(cd "${1:?usage: run.sh CHECKOUT [VENV] [RUNS]}" && pwd)
VENV=${2:-$(dirname "$CHECKOUT")/venv-fastzero}
RUNS=${3:-3}
WORK=$(mktemp -d /tmp/fastzero.XXXXXX)
export DBTEST_CACHE_DIR=${DBTEST_CACHE_DIR:-$WORK/cache}

if [ ! -x "$VENV/bin/pytest" ]; then
  python3.11 -m venv "$VENV"
  python3.11 - "$CHECKOUT/poetry.lock" >"$WORK/lock.txt" <<'EOF'
import sys, tomllib
for p in tomllib.load(open(sys.argv[1], "rb"))["package"]:
    print(f'{p["name"]}=={p["version"]}')
EOF
  "$VENV/bin/pip" install -q -c "$WORK/lock.txt" alembic 'fastapi[standard]' \
    'psycopg[binary]' 'pwdlib[argon2]' pydantic-settings pyjwt sqlalchemy \
    pytest pytest-cov httpx factory-boy freezegun testcontainers
  "$VENV/bin/pip" install -q -c "$WORK/lock.txt" -e "$REPO[factories]"
fi

for variant in baseline dbtest; do
  cp -r "$CHECKOUT" "$WORK/$variant"
  patch=$([ $variant = baseline ] && echo baseline.patch || echo conftest.patch)
  (cd "$WORK/$variant" && patch -s -p1 <"$HERE/$patch")
done

up=$("$VENV/bin/dbtest" up -d --port 0)
URL=$(sed -n 's/^export DBTEST_URL=//p' <<<"$up")
trap '"$VENV/bin/dbtest" down >/dev/null 2>&1 || true' EXIT
BASE=${URL%/*}/fastzero_baseline
"$VENV/bin/python" - "${URL/+psycopg/}" <<'EOF'
import sys, psycopg
with psycopg.connect(sys.argv[1], autocommit=True) as c:
    c.execute("DROP DATABASE IF EXISTS fastzero_baseline")
    c.execute("CREATE DATABASE fastzero_baseline")
EOF

PYTEST=("$VENV/bin/pytest" -p no:cacheprovider -q)
run() {  # variant [VAR=value...]: with PROBE_OUT among them, the leak probe runs too
  local variant=$1; shift
  local extra=(); [[ " $* " == *" PROBE_OUT="* ]] && extra=(-p probe)
  if [ "$variant" = baseline ]; then
    (cd "$WORK/baseline" && env -u DBTEST_URL BASELINE_URL="$BASE" "$@" "${PYTEST[@]}" \
      -p no:dbtest "${extra[@]}")
  else
    (cd "$WORK/dbtest" && env DBTEST_URL="$URL" "$@" "${PYTEST[@]}" "${extra[@]}")
  fi
}

echo "# $(date -u '+%Y-%m-%d %H:%M UTC') $(nproc) cores; load: $(cut -d' ' -f1-3 /proc/loadavg)"
# 1. correctness: the leak probe (rows a new connection sees after each test)
run baseline PYTHONPATH="$APPS" PROBE_URL="$BASE" PROBE_OUT="$WORK/baseline.json" \
  >"$WORK/baseline.log" 2>&1 || true
run dbtest PYTHONPATH="$APPS" PROBE_OUT="$WORK/dbtest.json" >"$WORK/dbtest.log" 2>&1 || true
for variant in baseline dbtest; do
  echo "$variant: $(grep -E '(passed|failed)' "$WORK/$variant.log" | tail -1)"
  echo "  probe: $(cat "$WORK/$variant.json" 2>/dev/null)"
  grep -E '^(FAILED|ERROR)' "$WORK/$variant.log" | sort >"$WORK/$variant.failed" || true
done
echo "failing in dbtest only:"; comm -13 "$WORK/baseline.failed" "$WORK/dbtest.failed"
# Rows in every dbtest database left on the server (the template, the worker database), its
# dbtest_internal bookkeeping aside:
"$VENV/bin/python" - "${URL/+psycopg/}" <<'EOF2'
import sys, psycopg
admin = psycopg.connect(sys.argv[1], autocommit=True)
names = [r[0] for r in admin.execute("SELECT datname FROM pg_database WHERE datname LIKE 'dbtest%'")]
for name in names:
    with psycopg.connect(sys.argv[1].rsplit("/", 1)[0] + "/" + name) as c:
        tables = [r[0] for r in c.execute(
            "SELECT format('%I.%I', schemaname, tablename) FROM pg_tables WHERE schemaname"
            " NOT IN ('pg_catalog', 'information_schema', 'dbtest_internal')")]
        rows = sum(c.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in tables)
    print(f"  {name}: {len(tables)} tables, {rows} rows")
EOF2

# 2. time: the pytest process, alternated, without the probe (columns: variant, wall s,
#    cpu s, load)
for i in $(seq "$RUNS"); do
  for variant in baseline dbtest; do
    # wall and CPU (user+sys) seconds of the pytest process, then the 1-minute load
    /usr/bin/time -o "$WORK/t" -f '%e %U %S' bash -c "$(declare -f run); $(declare -p WORK \
      BASE URL PYTEST); run $variant" >"$WORK/$variant.time$i.log" 2>&1 || true
    read -r wall user sys <"$WORK/t"
    echo "$variant $wall $(awk -v u="$user" -v s="$sys" 'BEGIN{print u+s}') \
$(cut -d' ' -f1 /proc/loadavg)" | tee -a "$WORK/times"
  done
done
median() { sort -n | awk '{a[NR]=$1} END{print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
for variant in baseline dbtest; do
  echo "$variant median: wall $(awk -v v=$variant '$1==v{print $2}' "$WORK/times" | median)s," \
    "cpu $(awk -v v=$variant '$1==v{print $3}' "$WORK/times" | median)s"
done
echo "# load after: $(cut -d' ' -f1-3 /proc/loadavg); logs in $WORK"
