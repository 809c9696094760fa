#!/usr/bin/env bash
# Idempotent bootstrap of everything the local mode needs, used by `make test` and `make demo`.
#
#   1. Debian packages (root only): PostgreSQL when no PostgreSQL binaries are found, a JDK and Maven when missing,
#      and $APT_PACKAGES (audio tools used by tests). Not root: a clear message instead (fatal for PostgreSQL/Java).
#   2. .venv (Python 3.11) and `pip install -e '.[dev]'`, re-run only when pyproject.toml is newer than the stamp.
#   3. Kafka + Kafka Connect jars and the Debezium PostgreSQL connector from Maven Central (stack/maven/pom.xml),
#      re-resolved only when they are missing or pom.xml changed (sha256 stamp).
#
# Environment: COACH_JARS_DIR (default <repo>/.deps/jars), COACH_PG_BIN_DIR (PostgreSQL bin directory),
# PYTHON (interpreter used to create .venv; default: python3.11, else python3.12, else python3 if 3.11/3.12).
# A second run does nothing slow and takes about a second.
set -euo pipefail

# Debian packages other parts of the project need (speech synthesis and audio conversion in tests/demo; wrk: the
# load generator of bench/api.py).
APT_PACKAGES="espeak-ng sox chromium wrk"
# Debian package providing PostgreSQL server binaries (initdb, pg_ctl); installed only when none are found.
PG_APT_PACKAGE="postgresql"
# Debian packages providing Java 17+ and Maven; installed only when `java` / `mvn` are missing.
JAVA_APT_PACKAGE="default-jdk-headless"
MAVEN_APT_PACKAGE="maven"

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"

VENV_DIR="$REPO_ROOT/.venv"
VENV_STAMP="$VENV_DIR/.coach-bootstrap-stamp"
POM="$REPO_ROOT/stack/maven/pom.xml"
JARS_DIR="${COACH_JARS_DIR:-$REPO_ROOT/.deps/jars}"
JARS_STAMP="$JARS_DIR/.coach-bootstrap-stamp"

log() { printf '[bootstrap] %s\n' "$*"; }
die() { printf '[bootstrap] error: %s\n' "$*" >&2; exit 1; }
is_root() { [ "$(id -u)" -eq 0 ]; }

# --- PostgreSQL binaries (same search order as stack/postgres.py:find_pg_bin_dir) ------------------------------
find_pg_bin_dir() {
  if [ -n "${COACH_PG_BIN_DIR:-}" ]; then
    if [ -x "$COACH_PG_BIN_DIR/pg_ctl" ] && [ -x "$COACH_PG_BIN_DIR/initdb" ]; then
      echo "$COACH_PG_BIN_DIR"; return 0
    fi
    die "COACH_PG_BIN_DIR=$COACH_PG_BIN_DIR has no pg_ctl/initdb"
  fi
  local dir
  for dir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    if [ -x "$dir/pg_ctl" ] && [ -x "$dir/initdb" ]; then echo "$dir"; return 0; fi
  done
  if command -v pg_config >/dev/null 2>&1; then
    dir="$(pg_config --bindir 2>/dev/null || true)"
    if [ -n "$dir" ] && [ -x "$dir/pg_ctl" ] && [ -x "$dir/initdb" ]; then echo "$dir"; return 0; fi
  fi
  if command -v pg_ctl >/dev/null 2>&1; then
    dir="$(dirname "$(command -v pg_ctl)")"
    if [ -x "$dir/initdb" ]; then echo "$dir"; return 0; fi
  fi
  return 1
}

dpkg_installed() { [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)" = "install ok installed" ]; }

# Stop and disable the distribution's own PostgreSQL clusters (Debian creates and starts `main` on 5432):
# the project runs its private cluster; the distro one would only use memory.
disable_distro_clusters() {
  command -v pg_lsclusters >/dev/null 2>&1 || return 0
  local ver name _rest
  while read -r ver name _rest; do
    [ -n "$ver" ] || continue
    pg_ctlcluster "$ver" "$name" stop >/dev/null 2>&1 || true
    if [ -f "/etc/postgresql/$ver/$name/start.conf" ]; then
      echo manual >"/etc/postgresql/$ver/$name/start.conf"
    fi
  done < <(pg_lsclusters --no-header 2>/dev/null || true)
}

# --- 1. system packages -----------------------------------------------------------------------------------------
missing=()
need_pg=0
if ! find_pg_bin_dir >/dev/null; then need_pg=1; missing+=("$PG_APT_PACKAGE"); fi
command -v java >/dev/null 2>&1 || missing+=("$JAVA_APT_PACKAGE")
command -v mvn >/dev/null 2>&1 || missing+=("$MAVEN_APT_PACKAGE")
if command -v dpkg-query >/dev/null 2>&1; then
  for pkg in $APT_PACKAGES; do dpkg_installed "$pkg" || missing+=("$pkg"); done
fi

if [ "${#missing[@]}" -gt 0 ]; then
  if is_root && command -v apt-get >/dev/null 2>&1; then
    log "installing Debian packages: ${missing[*]} (first run: a few minutes)…"
    # Keep package scripts from starting services (the distro's PostgreSQL cluster) during the install.
    policy_created=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
      printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && policy_created=1
    fi
    trap '[ "$policy_created" = 1 ] && rm -f /usr/sbin/policy-rc.d' EXIT
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    [ "$policy_created" = 1 ] && rm -f /usr/sbin/policy-rc.d
    trap - EXIT
    if [ "$need_pg" = 1 ]; then disable_distro_clusters; fi
  else
    for pkg in "${missing[@]}"; do
      case "$pkg" in
        "$PG_APT_PACKAGE")
          die "PostgreSQL binaries (initdb, pg_ctl) not found: install PostgreSQL 15+ (Debian/Ubuntu: \`sudo apt-get install postgresql\`) or set COACH_PG_BIN_DIR to its bin directory" ;;
        "$JAVA_APT_PACKAGE") die "java not found: install a JDK 17+ (Debian: \`sudo apt-get install default-jdk-headless\`)" ;;
        "$MAVEN_APT_PACKAGE") die "mvn not found: install Maven 3.8+ (Debian: \`sudo apt-get install maven\`)" ;;
        *) log "warning: Debian package '$pkg' is missing (some tests need it): sudo apt-get install $pkg" ;;
      esac
    done
  fi
fi
PG_BIN_DIR="$(find_pg_bin_dir)" || die "PostgreSQL binaries still not found after installing $PG_APT_PACKAGE"
java_major="$(java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -n1)"
if [ -n "$java_major" ] && [ "$java_major" -lt 17 ]; then
  die "Java $java_major found; Kafka 4.x needs Java 17+ (set PATH to a newer JDK)"
fi

# --- 2. Python virtual environment -------------------------------------------------------------------------------
pick_python() {
  if [ -n "${PYTHON:-}" ]; then echo "$PYTHON"; return 0; fi
  local candidate
  for candidate in python3.11 python3.12 python3; do
    if command -v "$candidate" >/dev/null 2>&1 &&
      "$candidate" -c 'import sys; sys.exit(0 if (3, 11) <= sys.version_info[:2] < (3, 13) else 1)' 2>/dev/null; then
      echo "$candidate"; return 0
    fi
  done
  return 1
}

# A .venv left half-made by an interrupted run (no working pip) is rebuilt.
if [ -d "$VENV_DIR" ] && ! "$VENV_DIR/bin/python" -m pip --version >/dev/null 2>&1; then
  log "rebuilding the incomplete .venv…"
  rm -rf "$VENV_DIR"
fi
if [ ! -x "$VENV_DIR/bin/python" ]; then
  python_bin="$(pick_python)" || die "Python 3.11 (or 3.12) not found; install it or set PYTHON=/path/to/python3.11"
  log "creating .venv with $python_bin…"
  "$python_bin" -m venv "$VENV_DIR"
  rm -f "$VENV_STAMP"
fi
if [ ! -f "$VENV_STAMP" ] || [ "$REPO_ROOT/pyproject.toml" -nt "$VENV_STAMP" ]; then
  log "installing Python dependencies into .venv (pip install -e '.[dev]'; first run: several minutes)…"
  pip_log="$VENV_DIR/pip-install.log"
  if ! { "$VENV_DIR/bin/python" -m pip install --upgrade pip &&
    URLLIB3_NO_OVERRIDE=1 PIP_NO_BINARY=urllib3-future "$VENV_DIR/bin/python" -m pip install -e '.[dev]'; } \
    >"$pip_log" 2>&1; then
    tail -n 40 "$pip_log" >&2
    die "pip install failed (full log: $pip_log)"
  fi
  touch "$VENV_STAMP"
fi

# --- 3. Kafka / Kafka Connect / Debezium jars --------------------------------------------------------------------
pom_hash="$(sha256sum "$POM" | cut -d' ' -f1)"
jars_ok=0
if [ -f "$JARS_STAMP" ] && [ "$(cat "$JARS_STAMP")" = "$pom_hash" ] &&
  compgen -G "$JARS_DIR/kafka/kafka_2.13-*.jar" >/dev/null &&
  compgen -G "$JARS_DIR/kafka/connect-runtime-*.jar" >/dev/null &&
  compgen -G "$JARS_DIR/plugins/debezium-connector-postgres/debezium-connector-postgres-*.jar" >/dev/null; then
  jars_ok=1
fi
if [ "$jars_ok" = 0 ]; then
  log "resolving Kafka/Connect/Debezium jars from Maven Central into $JARS_DIR (first run: ~2 min)…"
  rm -rf "$JARS_DIR/kafka" "$JARS_DIR/plugins" "$JARS_STAMP"
  mkdir -p "$JARS_DIR"
  mvn_log="$JARS_DIR/maven.log"
  : >"$mvn_log"
  for profile in kafka debezium; do
    if ! mvn -B -Dstyle.color=never -f "$POM" -P "$profile" dependency:copy-dependencies -Djars.dir="$JARS_DIR" \
      >>"$mvn_log" 2>&1; then
      tail -n 40 "$mvn_log" >&2
      die "Maven could not resolve the '$profile' jars (is Maven Central reachable?); full log: $mvn_log"
    fi
  done
  echo "$pom_hash" >"$JARS_STAMP"
fi

log "ready: .venv, jars in $JARS_DIR, PostgreSQL binaries in $PG_BIN_DIR"
