# Shared by the benchmarks that put gateways in front of a mock of OpenAI
# (tests/bench/gateway, tests/bench/concurrency); sourced after tests/dev.sh,
# with WORK, SRC, PIDS, MOCK_PORT, PORTKEY, PORTKEY_PORT, PORTKEY_VERSION
# and BODY set.
# shellcheck shell=bash

psql_() {
	as_pg "$PGBIN/psql" -h "$WORK/pg" -U postgres -d keygate -Atq -c "$1"
}

# lighttpd_on PORT SOCKET: a lighttpd in front of a FastCGI socket.
lighttpd_on() {
	local port=$1 sock=$2 dir=$WORK/lighttpd-$1
	mkdir -p "$dir"
	cat >"$dir/overrides.conf" <<CONF
var.keygate_port := $port
var.keygate_socket := "$sock"
var.keygate_state_dir := "$dir"
var.keygate_error_log := "$dir/error.log"
var.keygate_access_log := "$dir/access.log"
CONF
	KEYGATE_LIGHTTPD_OVERRIDES=$dir/overrides.conf \
		lighttpd -D -f "$SRC/fcgi/lighttpd.conf" &
	PIDS+=($!)
}

# wait_port PORT: until something answers HTTP on it (any status).
wait_port() {
	local _
	for _ in $(seq 1 100); do
		[ "$(curl -s -o /dev/null -w '%{http_code}' \
			"http://127.0.0.1:$1/" 2>/dev/null)" != 000 ] && return 0
		sleep 0.1
	done
	return 1
}

# mock_count: chat completions the mock has answered so far.
mock_count() {
	curl -fsS "http://127.0.0.1:$MOCK_PORT/requests" |
		sed 's/.*"requests":\([0-9]*\).*/\1/'
}

# reaches_mock NAME URL [curl args...]: one POST through a gateway must be
# answered 200 and must have reached the mock.  Says why when not.
reaches_mock() {
	local name=$1 url=$2 before status
	shift 2
	before=$(mock_count)
	status=$(curl -sS -o "$WORK/$name.reply" -w '%{http_code}' -X POST \
		-H 'Content-Type: application/json' "$@" -d "$BODY" "$url") ||
		true
	if [ "$status" != 200 ] || [ "$(mock_count)" -ne $((before + 1)) ]; then
		echo "$name: HTTP $status, mock calls $before -> $(mock_count):" \
			"$(head -c 300 "$WORK/$name.reply" 2>/dev/null)" >&2
		return 1
	fi
}

# to_ms LATENCY: wrk's 850.00us / 1.49ms / 1.02s in milliseconds.
to_ms() {
	echo "$1" | awk '{
		v = $1 + 0
		if ($1 ~ /us$/) v /= 1000
		else if ($1 ~ /ms$/) v += 0
		else if ($1 ~ /m$/) v *= 60000
		else if ($1 ~ /s$/) v *= 1000
		printf "%.3f", v
	}'
}

# need_node: node (for the mock) and, when Portkey runs, npm.
need_node() {
	local want=()
	command -v node >/dev/null || want+=(nodejs)
	[ "$PORTKEY" = 1 ] && ! command -v npm >/dev/null && want+=(npm)
	[ ${#want[@]} -eq 0 ] && return 0
	if [ "$(id -u)" -ne 0 ]; then
		echo "missing ${want[*]} (run as root, or install them)" >&2
	else
		say "installing ${want[*]}"
		DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null &&
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
			--no-install-recommends "${want[@]}" >/dev/null ||
			echo "apt-get could not install ${want[*]}" >&2
	fi
	command -v node >/dev/null || die "node is needed for the mock upstream"
}

# start_portkey: installs the pinned Portkey gateway (and the version of
# @hono/node-server it streams with) under $WORK/portkey if
# it is not there yet and starts it.  Says why and fails when it cannot.
start_portkey() {
	local dir=$WORK/portkey pkg have
	pkg=$dir/node_modules/@portkey-ai/gateway
	if ! command -v npm >/dev/null; then
		echo "portkey: npm is not installed" >&2
		return 1
	fi
	have=$(node -p "require('$pkg/package.json').version" 2>/dev/null || true)
	if [ "$have" != "$PORTKEY_VERSION" ]; then
		say "npm install @portkey-ai/gateway@$PORTKEY_VERSION in $dir"
		mkdir -p "$dir"
		# Portkey 1.15.2 streams only with @hono/node-server 1.14.1:
		# later versions answer every stream 500 "TypeError: immutable".
		echo '{"private":true,"overrides":{"@hono/node-server":"1.14.1"}}' \
			>"$dir/package.json"
		if ! npm install --prefix "$dir" --no-audit --no-fund \
			--loglevel=error "@portkey-ai/gateway@$PORTKEY_VERSION" \
			>"$WORK/npm.log" 2>&1; then
			echo "portkey: npm install failed:" >&2
			tail -5 "$WORK/npm.log" >&2
			return 1
		fi
	fi
	# The gateway's own server: one node process, no web UI.  Loopback
	# custom hosts are allowed by default (TRUSTED_CUSTOM_HOSTS).
	NODE_ENV=production node "$pkg/build/start-server.js" \
		--port="$PORTKEY_PORT" --headless >"$WORK/portkey.log" 2>&1 &
	PIDS+=($!)
	if ! wait_port "$PORTKEY_PORT"; then
		echo "portkey: no answer on port $PORTKEY_PORT:" >&2
		tail -5 "$WORK/portkey.log" >&2
		return 1
	fi
}

