#!/usr/bin/env bash
# keygate on one machine, from a fresh Debian 12 checkout, as root:
#
#   tests/dev.sh run     install what is missing, build, start PostgreSQL,
#                        keygated and lighttpd on 127.0.0.1:8080 and a demo
#                        LLM provider on loopback, migrate, give the root
#                        tenant credits, print an admin key once with
#                        examples; Ctrl-C stops everything
#   tests/dev.sh check   install and build the same way (strict warnings as
#                        errors, AddressSanitizer + UndefinedBehaviorSanitizer),
#                        install the official client SDKs the tests drive
#                        keygate with (npm ci in tests/sdk), and run every
#                        test: make check, tests/fuzz/run, make distcheck and
#                        tests/deb/run (builds the .deb and, unless
#                        KEYGATE_DEB_INSTALL=0, installs, upgrades and purges
#                        it on this machine)
#
# Settings (environment): KEYGATE_WORKDIR (default /tmp/keygate-dev: the
# private PostgreSQL cluster, config, sockets and logs), KEYGATE_HTTP_PORT
# (default 8080), KEYGATE_DEMO_PORT (the demo provider's, default the
# HTTP port + 1), KEYGATE_CONFIGURE_FLAGS (extra ./configure arguments).
set -euo pipefail

SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK=${KEYGATE_WORKDIR:-/tmp/keygate-dev}
HTTP_PORT=${KEYGATE_HTTP_PORT:-8080}
DEMO_PORT=${KEYGATE_DEMO_PORT:-$((HTTP_PORT + 1))}
PGBIN=/usr/lib/postgresql/15/bin
PACKAGES=(build-essential autoconf automake pkg-config
	python3-jsonschema
	libfcgi-dev libpq-dev libgcrypt20-dev libjson-c-dev libcurl4-openssl-dev
	libcmocka-dev postgresql lighttpd apache2 nginx python3 python3-pytest
	curl wrk ca-certificates clang-14 libclang-rt-14-dev)
# Node.js runs the official client SDKs in tests/sdk; machine images
# usually bring their own, so Debian's only when there is none.
command -v node >/dev/null 2>&1 || PACKAGES+=(nodejs npm)

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'tests/dev.sh: %s\n' "$*" >&2; exit 1; }

install_packages() {
	local missing=() p
	for p in "${PACKAGES[@]}"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null |
			grep -q 'install ok installed' || missing+=("$p")
	done
	[ ${#missing[@]} -eq 0 ] && return 0
	[ "$(id -u)" -eq 0 ] ||
		die "missing packages: ${missing[*]} (run as root, or install them)"
	say "installing ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -q >/dev/null
	apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
	# The web-server packages just installed start servers on port 80 that
	# nothing here uses: the tests start their own on free ports.
	local unit
	for unit in "${missing[@]}"; do
		case $unit in lighttpd|apache2|nginx) ;; *) continue ;; esac
		if [ -d /run/systemd/system ]; then
			systemctl disable --now -q "$unit" 2>/dev/null || true
		elif [ -x "/etc/init.d/$unit" ]; then
			"/etc/init.d/$unit" stop >/dev/null 2>&1 || true
			update-rc.d "$unit" disable >/dev/null 2>&1 || true
		fi
	done
}

# The official client SDKs that tests/e2e/test_sdk.py drives keygate with,
# from the npm registry at the versions tests/sdk/package-lock.json pins,
# into tests/sdk/node_modules (again only when the lock file changed).
install_sdks() {
	local dir=$SRC/tests/sdk
	[ -f "$dir/node_modules/.package-lock.json" ] &&
		[ ! "$dir/package-lock.json" -nt "$dir/node_modules/.package-lock.json" ] &&
		return 0
	say "npm ci in tests/sdk"
	(cd "$dir" && npm ci --no-audit --no-fund --loglevel=error >/dev/null) ||
		die "npm ci in tests/sdk failed"
}

# build FLAVOUR [configure flags...]: an out-of-tree build in _build/FLAVOUR.
build() {
	local dir=$SRC/_build/$1; shift
	[ -f "$SRC/config.status" ] &&
		die "the source tree has an in-tree build; run 'make distclean' there first"
	if [ ! -x "$SRC/configure" ] || [ "$SRC/configure.ac" -nt "$SRC/configure" ] ||
	   [ "$SRC/Makefile.am" -nt "$SRC/Makefile.in" ]; then
		say "autoreconf"
		(cd "$SRC" && autoreconf -fi >/dev/null 2>&1) || die "autoreconf failed"
	fi
	mkdir -p "$dir"
	local want="$* ${KEYGATE_CONFIGURE_FLAGS:-}"
	if [ ! -f "$dir/Makefile" ] || [ "$(cat "$dir/.flags" 2>/dev/null)" != "$want" ]; then
		say "configure $want"
		(cd "$dir" && "$SRC/configure" -q $want) || die "configure failed"
		echo "$want" >"$dir/.flags"
	fi
	say "make ($(basename "$dir"))"
	make -s -C "$dir" -j"$(nproc)" >/dev/null || die "build failed"
	BUILD=$dir
}

# as_pg CMD...: PostgreSQL refuses to run as root; use its own user then.
as_pg() {
	if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

pg_start() {
	mkdir -p "$WORK"
	chmod 755 "$WORK"
	if [ ! -f "$WORK/pg/PG_VERSION" ]; then
		say "initdb $WORK/pg"
		mkdir -p "$WORK/pg"
		[ "$(id -u)" -eq 0 ] && chown postgres: "$WORK/pg"
		as_pg "$PGBIN/initdb" -D "$WORK/pg" -A trust -U postgres \
			--no-sync >/dev/null
	fi
	say "starting PostgreSQL (socket in $WORK/pg)"
	as_pg "$PGBIN/pg_ctl" -D "$WORK/pg" -w -l "$WORK/pg/log" \
		-o "-k $WORK/pg -c listen_addresses='' -p 5432" start >/dev/null
	as_pg "$PGBIN/psql" -h "$WORK/pg" -U postgres -d postgres -Atqc \
		"SELECT 1 FROM pg_database WHERE datname = 'keygate'" | grep -q 1 ||
		as_pg "$PGBIN/createdb" -h "$WORK/pg" -U postgres keygate
}

pg_stop() {
	[ -f "$WORK/pg/postmaster.pid" ] &&
		as_pg "$PGBIN/pg_ctl" -D "$WORK/pg" -m fast -w stop >/dev/null 2>&1 || true
}

write_config() {
	local conf=$WORK/keygate.conf
	[ -f "$conf" ] && return 0
	say "writing $conf with fresh secrets"
	umask 077
	cat >"$conf" <<CONF
# Development configuration written by tests/dev.sh.
mode = development
listen = unix:$WORK/keygate.sock
socket_mode = 0600
database_url = host=$WORK/pg port=5432 dbname=keygate user=postgres
sql_dir = $SRC/sql
hmac_secret = $(head -c 32 /dev/urandom | base64)
jwt_secret = $(head -c 32 /dev/urandom | base64)
master_keys = dev1:$(head -c 32 /dev/urandom | base64)
# Local mock providers can be named here (openai_base_url = ...).
CONF
	umask 022
}

lighttpd_start() {
	mkdir -p "$WORK/lighttpd"
	cat >"$WORK/lighttpd-local.conf" <<CONF
var.keygate_port := $HTTP_PORT
var.keygate_socket := "$WORK/keygate.sock"
var.keygate_state_dir := "$WORK/lighttpd"
var.keygate_error_log := "$WORK/lighttpd-error.log"
var.keygate_access_log := "$WORK/lighttpd-access.log"
CONF
	say "starting lighttpd on 127.0.0.1:$HTTP_PORT"
	KEYGATE_LIGHTTPD_OVERRIDES=$WORK/lighttpd-local.conf \
		lighttpd -D -f "$SRC/fcgi/lighttpd.conf" &
	LIGHTTPD_PID=$!
}

# The demo provider's block of keygate.conf, rewritten on every start so
# that its port follows KEYGATE_DEMO_PORT; the rest of the file is the
# operator's.
demo_config() {
	local conf=$WORK/keygate.conf
	sed -i '/^# >>> demo provider/,/^# <<< demo provider/d' "$conf"
	cat >>"$conf" <<CONF
# >>> demo provider: tests/dev.sh run rewrites this block on every start.
# The demo models (demo-*) go to tests/demo-provider on loopback; every
# other model goes to its real provider as usual.
upstreams = "demo url=http://127.0.0.1:$DEMO_PORT/v1 models=demo-chat,demo-*"
# This machine may have no network: provider keys stored in the vault are
# kept without trying them against their provider.
validate_llm_keys = false
# <<< demo provider
CONF
}

demo_start() {
	say "starting the demo provider on 127.0.0.1:$DEMO_PORT (models demo-*)"
	python3 "$SRC/tests/demo-provider" --port "$DEMO_PORT" &
	DEMO_PID=$!
}

# demo_credits KEY: prices the demo models and, when the root tenant has
# less than 50 credits, gives it 100, so that a chat completion works from
# the first minute.
demo_credits() {
	local url=http://127.0.0.1:$HTTP_PORT balance
	"$BUILD/keygatectl" --config "$WORK/keygate.conf" prices set 'demo-*' \
		1000 2000 >/dev/null
	balance=$(curl -fsS -H "Authorization: Bearer $1" "$url/v1/account" |
		python3 -c 'import json,sys; print(json.load(sys.stdin)["credits_balance"])') ||
		die "GET /v1/account failed; see $WORK/keygated.log"
	python3 -c "import sys; sys.exit(0 if float('$balance') < 50 else 1)" || return 0
	say "giving the root tenant 100 credits"
	curl -fsS -o /dev/null -H "Authorization: Bearer $1" \
		-H 'Content-Type: application/json' \
		-d '{"amount":100,"reason":"tests/dev.sh run: credits to try the gateway"}' \
		"$url/v1/tenants/00000000-0000-0000-0000-000000000001/credits" ||
		die "topping up credits failed; see $WORK/keygated.log"
}

cmd_run() {
	install_packages
	build run
	pg_start
	write_config
	demo_config
	local conf=$WORK/keygate.conf
	say "keygatectl migrate"
	"$BUILD/keygatectl" --config "$conf" migrate
	trap cleanup INT TERM EXIT
	demo_start
	say "starting keygated (log: $WORK/keygated.log)"
	"$BUILD/keygated" --config "$conf" 2>>"$WORK/keygated.log" &
	KEYGATED_PID=$!
	lighttpd_start
	local i
	for i in $(seq 1 50); do
		curl -fsS "http://127.0.0.1:$HTTP_PORT/health" >/dev/null 2>&1 && break
		kill -0 "$KEYGATED_PID" 2>/dev/null || die "keygated exited; see $WORK/keygated.log"
		sleep 0.2
	done
	local key
	key=$("$BUILD/keygatectl" --config "$conf" create-key --name admin \
		--scopes '*' 2>/dev/null)
	demo_credits "$key"
	local H='-H "Authorization: Bearer $KEY"' J="-H 'Content-Type: application/json'"
	cat <<MSG

keygate is running on http://127.0.0.1:$HTTP_PORT (Ctrl-C stops it), with
a demo provider for the models demo-* and 100 credits on the root tenant.

Admin key (scope *, root tenant), shown only this once:

    $key

Try these, in order, in another shell:

    export KG=http://127.0.0.1:$HTTP_PORT KEY=$key
    # Who am I: key id, tenant, scopes, rate limit.
    curl -s $H \$KG/v1/auth/whoami
    # A key that may only chat, 60 requests a minute (its secret is shown once).
    curl -s $H $J \\
         -d '{"name":"chat-only","scopes":["chat:write"],"rate_limit_max":60}' \$KG/v1/api_keys
    # The tenant's credits before a call.
    curl -s $H \$KG/v1/account
    # A chat completion with the demo model; see "keygate": credits_charged.
    curl -s $H $J \\
         -d '{"model":"demo-chat","messages":[{"role":"user","content":"Hello, gateway"}]}' \$KG/v1/chat/completions
    # The same, streamed: the chunk with finish_reason carries "keygate".
    curl -sN $H $J \\
         -d '{"model":"demo-chat","stream":true,"messages":[{"role":"user","content":"Stream this"}]}' \$KG/v1/chat/completions
    # The credits after: the balance went down by what the two calls cost.
    curl -s $H \$KG/v1/account
    # The models this tenant can reach now, with prices and who pays.
    curl -s $H \$KG/v1/models
    # Store an OpenAI key in the vault (sealed with AES-256-GCM; gpt-* calls would use it).
    curl -s $H $J \\
         -d '{"openai_key":"sk-proj-demo0123456789abcdefghijklmnopqrstuvwxyzABCD"}' \$KG/v1/account/llm-keys
    # A key that is not in a provider's format is refused (400), nothing stored.
    curl -s $H $J -d '{"anthropic_key":"not-a-key"}' \$KG/v1/account/llm-keys
    # What the vault holds (never the keys themselves); then remove the demo key.
    curl -s $H \$KG/v1/account/llm-keys
    curl -s -X DELETE $H "\$KG/v1/account/llm-keys?provider=openai"
    # The audit log's latest rows: every change above, hash-chained.
    curl -s $H "\$KG/v1/audit_logs?limit=5"

Files: $WORK (config keygate.conf, log keygated.log, PostgreSQL in pg/).
MSG
	wait "$KEYGATED_PID" || true
}

cleanup() {
	trap - INT TERM EXIT
	say "stopping"
	[ -n "${LIGHTTPD_PID:-}" ] && kill "$LIGHTTPD_PID" 2>/dev/null || true
	[ -n "${DEMO_PID:-}" ] && kill "$DEMO_PID" 2>/dev/null || true
	if [ -n "${KEYGATED_PID:-}" ] && kill -0 "$KEYGATED_PID" 2>/dev/null; then
		kill -TERM "$KEYGATED_PID" 2>/dev/null || true
		wait "$KEYGATED_PID" 2>/dev/null || true
	fi
	wait 2>/dev/null || true
	pg_stop
}

# count WORD LINE: the number before WORD in LINE ("12 passed"), or 0.
count() {
	local n
	n=$(echo "$2" | grep -oE "[0-9]+ $1" | grep -oE '[0-9]+' | head -1 || true)
	echo "${n:-0}"
}

# Adds up what the test programs reported and prints one closing line.
summary() {
	local dir=$1 passed=0 failed=0 skipped=0 f n last
	for f in "$dir"/tests/unit/*/*.log; do
		[ -f "$f" ] || continue
		n=$(sed -n 's/^\[  PASSED  \] \([0-9]*\) test.*/\1/p' "$f" | tail -1)
		passed=$((passed + ${n:-0}))
		n=$(sed -n 's/^\[  FAILED  \] \([0-9]*\) test.*/\1/p' "$f" | tail -1)
		failed=$((failed + ${n:-0}))
	done
	# pytest's closing line, and tests/deb/run's "deb: N passed, ...".
	for f in "$dir/tests/e2e/run.log" "$dir/deb.log"; do
		[ -f "$f" ] || continue
		last=$(grep -E '^(=+ .*(passed|failed|error|skipped).* in [0-9.]+s|deb: [0-9]+ passed)' "$f" |
			tail -1 || true)
		passed=$((passed + $(count passed "$last")))
		failed=$((failed + $(count failed "$last") + $(count 'errors?' "$last")))
		skipped=$((skipped + $(count skipped "$last")))
	done
	echo "$passed passed, $failed failed, $skipped skipped"
}

cmd_check() {
	install_packages
	install_sdks
	build check --enable-werror --enable-sanitizers
	say "make check"
	local rc=0 f
	# Every test file must reach the tarball (Makefile.am lists them).
	for f in $(git -C "$SRC" ls-files tests/e2e 2>/dev/null); do
		grep -qF "$f" "$SRC/Makefile.am" ||
			die "$f is not listed in Makefile.am (E2E_FILES)"
	done
	# ASan: report leaks in the unit tests; the daemons exit through
	# _exit()/exit() paths whose library caches are not worth chasing here.
	KEYGATE_E2E=${KEYGATE_E2E:-required} \
	ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=0} \
	UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1} \
		make -C "$BUILD" -j"$(nproc)" check >/dev/null 2>&1 || rc=$?
	for f in "$BUILD"/tests/unit/*/*.log "$BUILD"/tests/e2e/run.log; do
		[ -f "$f" ] || continue
		echo "---- ${f#"$BUILD"/}"
		cat "$f"
	done
	grep -E '^# (TOTAL|PASS|SKIP|XFAIL|FAIL|XPASS|ERROR):' "$BUILD/test-suite.log" || true
	# The parsers of untrusted bytes, fuzzed a few seconds each (run
	# tests/fuzz/run with FUZZ_SECONDS for longer).
	say "tests/fuzz/run"
	if ! FUZZ_SECONDS=${FUZZ_SECONDS:-5} FUZZ_DIR=$BUILD/fuzz \
	    "$SRC/tests/fuzz/run" >"$BUILD/fuzz.log" 2>&1; then
		tail -40 "$BUILD/fuzz.log"
		echo "tests/fuzz/run failed"
		rc=1
	else
		cat "$BUILD/fuzz.log"
	fi
	# The tarball builds, installs and uninstalls cleanly on its own (its
	# unit tests run again inside; the end-to-end ones ran above).
	say "make distcheck"
	if ! KEYGATE_E2E=skip make -C "$BUILD" distcheck >"$BUILD/distcheck.log" 2>&1; then
		tail -40 "$BUILD/distcheck.log"
		echo "make distcheck failed"
		rc=1
	fi
	# The Debian package builds, installs, upgrades and purges cleanly
	# (set KEYGATE_DEB_INSTALL=0 to build and inspect it only).
	say "tests/deb/run"
	if ! KEYGATE_DEB_INSTALL=${KEYGATE_DEB_INSTALL:-1} "$SRC/tests/deb/run" \
	    >"$BUILD/deb.log" 2>&1; then
		tail -40 "$BUILD/deb.log"
		rc=1
	fi
	summary "$BUILD"
	return $rc
}

# Sourced by tests/bench/run for the functions above; executed, it acts.
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
	case ${1:-} in
	run) cmd_run ;;
	check) cmd_check ;;
	*) echo "usage: tests/dev.sh run | check" >&2; exit 2 ;;
	esac
fi
