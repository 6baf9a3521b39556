# shellcheck shell=bash
# Sourced by scripts/up, scripts/test and scripts/bench-upload: gets this machine ready to
# build and run Stayler Storage. Installs only what is missing (Debian packages, via apt-get)
# and starts only what is down (PostgreSQL and RabbitMQ, when they are local).

say() { printf '==> %s\n' "$*" >&2; }
die() {
    printf 'error: %s\n' "$*" >&2
    exit 1
}

# Runs a command as root: directly, or through sudo.
as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null; then
        sudo "$@"
    else
        die "root is needed for: $* (run as root or install sudo)"
    fi
}

apt_updated=
# Installs Debian packages.
apt_install() {
    command -v apt-get >/dev/null || die "apt-get not found: install $* with your package manager"
    say "installing $*"
    if [ -z "$apt_updated" ]; then
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
        apt_updated=1
    fi
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# What `cargo build` needs besides Rust itself: a C linker, pkg-config and libturbojpeg.
ensure_build_prerequisites() {
    command -v cargo >/dev/null || die "cargo not found: install Rust from https://rustup.rs"
    local missing=()
    command -v cc >/dev/null || missing+=(gcc libc6-dev)
    command -v pkg-config >/dev/null || missing+=(pkg-config)
    command -v curl >/dev/null || missing+=(curl)
    pkg-config --exists libturbojpeg 2>/dev/null || missing+=(libturbojpeg0-dev)
    if [ ${#missing[@]} -gt 0 ]; then
        apt_install "${missing[@]}"
    fi
}

# True when something accepts TCP connections on HOST PORT.
port_open() {
    # shellcheck disable=SC2016 # expanded by the inner bash
    timeout 2 bash -c 'exec 3<>"/dev/tcp/$1/$2"' _ "$1" "$2" 2>/dev/null
}

# True when an AMQP broker on HOST PORT answers the protocol header within 5 s: a broker
# that accepts connections but has stopped answering fails every test that needs it.
amqp_answers() {
    # shellcheck disable=SC2016 # expanded by the inner bash
    timeout 5 bash -c 'exec 3<>"/dev/tcp/$1/$2"; printf "AMQP\x00\x00\x09\x01" >&3; [ "$(head -c 1 <&3 | wc -c)" -eq 1 ]' \
        _ "$1" "$2" 2>/dev/null
}

is_local_host() {
    case "$1" in localhost | 127.* | ::1 | "[::1]") return 0 ;; *) return 1 ;; esac
}

# Prints "HOST PORT" of a URL such as postgres://user:pw@host:5432/db or amqp://…@host/vhost.
url_host_port() {
    local url=$1 default_port=$2 authority
    authority=${url#*://}
    authority=${authority%%/*}
    authority=${authority##*@}
    case "$authority" in
    *:*) printf '%s %s\n' "${authority%:*}" "${authority##*:}" ;;
    *) printf '%s %s\n' "$authority" "$default_port" ;;
    esac
}

# Waits up to SECONDS for a command to succeed.
wait_until() {
    local seconds=$1 what=$2
    shift 2
    local deadline=$((SECONDS + seconds))
    until "$@"; do
        [ $SECONDS -lt $deadline ] || die "$what did not come up within ${seconds}s"
        sleep 0.5
    done
}

# Starts the local PostgreSQL cluster listening on PORT if nothing answers there.
ensure_postgres() {
    local host=$1 port=$2 version cluster
    port_open "$host" "$port" && return 0
    is_local_host "$host" || die "PostgreSQL at $host:$port does not answer"
    command -v pg_lsclusters >/dev/null ||
        die "PostgreSQL is not installed (Debian: apt-get install postgresql; the dev URLs expect trust login for user postgres on 127.0.0.1)"
    read -r version cluster < <(pg_lsclusters -h | awk -v port="$port" '$3 == port { print $1, $2; exit }') || true
    [ -n "${version:-}" ] || die "no PostgreSQL cluster is configured on port $port (see pg_lsclusters)"
    say "starting PostgreSQL $version/$cluster"
    as_root pg_ctlcluster --skip-systemctl-redirect "$version" "$cluster" start
    wait_until 60 "PostgreSQL on $host:$port" port_open "$host" "$port"
}

# Starts the local RabbitMQ node if nothing answers on HOST PORT.
ensure_rabbitmq() {
    local host=$1 port=$2
    if port_open "$host" "$port"; then
        amqp_answers "$host" "$port" && return 0
        is_local_host "$host" || die "RabbitMQ at $host:$port accepts connections but does not answer"
        say "RabbitMQ accepts connections but does not answer: restarting it"
        as_root timeout 60 rabbitmqctl -q stop >/dev/null 2>&1 || as_root pkill -9 -u rabbitmq beam.smp || true
        wait_until 60 "RabbitMQ on $host:$port to stop" port_closed "$host" "$port"
    fi
    is_local_host "$host" || die "RabbitMQ at $host:$port does not answer"
    command -v rabbitmq-server >/dev/null || die "RabbitMQ is not installed (Debian: apt-get install rabbitmq-server)"
    say "starting RabbitMQ"
    as_root rabbitmq-server -detached
    as_root timeout 120 rabbitmqctl -q await_startup >/dev/null 2>&1 || true
    wait_until 120 "RabbitMQ on $host:$port" amqp_answers "$host" "$port"
}

port_closed() {
    ! port_open "$@"
}

# Starts a local Redis (in memory only, nothing saved to disk) if nothing answers on HOST PORT.
ensure_redis() {
    local host=$1 port=$2
    port_open "$host" "$port" && return 0
    is_local_host "$host" || die "Redis at $host:$port does not answer"
    command -v redis-server >/dev/null || apt_install redis-server
    say "starting Redis"
    as_root redis-server --daemonize yes --bind 127.0.0.1 -::1 --port "$port" --save "" --appendonly no
    wait_until 30 "Redis on $host:$port" port_open "$host" "$port"
}

# The rustfmt and clippy components, for the style checks.
ensure_lint_tools() {
    local component
    for component in rustfmt clippy; do
        cargo "${component/rustfmt/fmt}" --version >/dev/null 2>&1 || rustup component add "$component"
    done
}

# What the browser test of the operations page needs: node and npm, Debian's Chromium, and
# playwright-core at the version pinned in e2e/browser/package-lock.json (reinstalled when the
# lock file changes).
ensure_browser_test_tools() {
    local missing=()
    command -v node >/dev/null || missing+=(nodejs)
    command -v npm >/dev/null || missing+=(npm)
    [ -x /usr/bin/chromium ] || missing+=(chromium)
    if [ ${#missing[@]} -gt 0 ]; then
        apt_install "${missing[@]}"
    fi
    local installed=e2e/browser/node_modules/.package-lock.json
    if [ ! -f "$installed" ] || [ e2e/browser/package-lock.json -nt "$installed" ]; then
        say "installing the browser test's packages (npm ci in e2e/browser)"
        (cd e2e/browser && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
    fi
}

# Runs a command without its output.
quietly() { "$@" >/dev/null 2>&1; }

# The Garage version the s3 backend is tested against.
GARAGE_VERSION=2.5.0

# Installs Garage, the S3-compatible store the s3 backend is tested against, when it is
# missing: built from source by cargo (about 15 minutes, once per machine).
ensure_garage() {
    PATH="$PATH:${CARGO_HOME:-$HOME/.cargo}/bin"
    command -v garage >/dev/null && return 0
    say "installing Garage $GARAGE_VERSION (cargo install; about 15 minutes, once per machine)"
    cargo install garage --locked --version "$GARAGE_VERSION"
}

# Starts a single Garage node in DIR (config, data and log) on loopback ports S3_PORT and
# RPC_PORT, in the background, with BUCKET and a key KEY_ID/SECRET allowed on it; prints
# nothing, waits until the node takes requests.
start_garage_node() {
    local dir=$1 s3_port=$2 rpc_port=$3 bucket=$4 key_id=$5 secret=$6
    local key_name=$bucket-key
    ensure_garage
    mkdir -p "$dir"
    cat >"$dir/garage.toml" <<TOML
metadata_dir = "$dir/meta"
data_dir = "$dir/data"
db_engine = "sqlite"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:$rpc_port"
rpc_public_addr = "127.0.0.1:$rpc_port"
rpc_secret = "5354a7e4c0ffee5354a7e4c0ffee5354a7e4c0ffee5354a7e4c0ffee5354a7e4"

[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:$s3_port"
root_domain = ".s3.garage.localhost"
TOML
    setsid garage -c "$dir/garage.toml" server >>"$dir/server.log" 2>&1 </dev/null &
    wait_until 60 "Garage on 127.0.0.1:$s3_port" port_open 127.0.0.1 "$s3_port"
    local garage=(garage -c "$dir/garage.toml")
    wait_until 60 "the Garage node's status" quietly "${garage[@]}" status
    if "${garage[@]}" status 2>/dev/null | grep -q "NO ROLE ASSIGNED"; then
        local node
        node=$("${garage[@]}" node id -q 2>/dev/null | cut -d@ -f1)
        "${garage[@]}" layout assign -z local -c 1G "$node" >/dev/null
        "${garage[@]}" layout apply --version 1 >/dev/null
    fi
    "${garage[@]}" bucket info "$bucket" >/dev/null 2>&1 || "${garage[@]}" bucket create "$bucket" >/dev/null
    "${garage[@]}" key info "$key_name" >/dev/null 2>&1 ||
        "${garage[@]}" key import --yes -n "$key_name" "$key_id" "$secret" >/dev/null
    "${garage[@]}" bucket allow --read --write --owner "$bucket" --key "$key_name" >/dev/null
}

# The Garage node the tests use (shared::test_support::s3_config names it): started once per
# machine boot, data under ${TMPDIR:-/tmp}/stayler-garage.
ensure_test_garage() {
    local dir="${TMPDIR:-/tmp}/stayler-garage"
    port_open 127.0.0.1 39900 && return 0
    say "starting a Garage node for the tests (data in $dir)"
    start_garage_node "$dir" 39900 39901 stayler-test GK5354a7e4c0ffee0000000001 \
        5354a7e4c0ffee00000000000000000000000000000000000000000000000001
}

# Enables the management dashboard (port 15672) of the local RabbitMQ node.
ensure_rabbitmq_dashboard() {
    command -v rabbitmq-plugins >/dev/null || return 0
    if ! as_root rabbitmq-plugins -q list -e -m 2>/dev/null | grep -qx rabbitmq_management; then
        say "enabling the RabbitMQ management dashboard"
        as_root rabbitmq-plugins -q enable rabbitmq_management >/dev/null
    fi
    wait_until 60 "the RabbitMQ dashboard on :15672" port_open 127.0.0.1 15672
}

# The management API of the local RabbitMQ node, as the guest user (loopback only).
rabbitmq_api() {
    local method=$1 path=$2
    curl -fsS --max-time 30 -u guest:guest -X "$method" "http://127.0.0.1:15672/api/$path"
}

# Names of the queues and exchanges of the default vhost that tests declared (prefix
# `test-`), "queue NAME" or "exchange NAME", one a line.
broker_test_leftovers() {
    local kind json
    for kind in queue exchange; do
        json=$(rabbitmq_api GET "${kind}s/%2f?columns=name") || die "listing the broker's ${kind}s"
        grep -o '"name":"test-[^"]*"' <<<"$json" | sed -e 's/^"name":"//' -e 's/"$//' -e "s/^/$kind /" || true
    done
}

# Deletes what tests declared in the local broker: every queue and exchange named `test-…`.
delete_broker_test_leftovers() {
    local kind name
    while read -r kind name; do
        [ -n "$name" ] || continue
        [[ "$name" =~ ^test-[a-z0-9.-]+$ ]] || die "unexpected test queue or exchange name '$name'"
        rabbitmq_api DELETE "${kind}s/%2f/$name" >/dev/null || true
    done
}

# The database named by a postgres:// URL, and the URL of the `postgres` database next to it.
database_name() {
    local base=${1%%\?*}
    printf '%s\n' "${base##*/}"
}
maintenance_url() {
    local base=${1%%\?*}
    printf '%s/postgres%s\n' "${base%/*}" "${1#"$base"}"
}

# Creates the database named in a postgres:// URL unless it exists.
ensure_database() {
    local url=$1 name admin
    name=$(database_name "$url")
    admin=$(maintenance_url "$url")
    [[ "$name" =~ ^[A-Za-z0-9_-]+$ ]] || die "unexpected database name '$name' in $url"
    if [ -z "$(psql "$admin" -qtAc "SELECT 1 FROM pg_database WHERE datname = '$name'")" ]; then
        say "creating database $name"
        psql "$admin" -qc "CREATE DATABASE \"$name\"" >/dev/null
    fi
}

# Sets up sqlx's compile-time query checks: against DATABASE_URL when it is set (a
# developer's migrated database sees queries not yet in .sqlx/), else from the committed
# `.sqlx/` query metadata (SQLX_OFFLINE=true), else against a scratch database migrated from
# `migrations/` on the server of the maintenance URL given as $1.
prepare_query_checks() {
    local admin=${1:-postgres://postgres@127.0.0.1:5432/postgres}
    if [ "${SQLX_OFFLINE:-}" = true ]; then
        return 0
    elif [ -n "${DATABASE_URL:-}" ]; then
        say "checking queries against DATABASE_URL"
        return 0
    elif [ -d .sqlx ]; then
        export SQLX_OFFLINE=true
        return 0
    fi
    say "warning: .sqlx/ is missing (make it with: cargo sqlx prepare --workspace -- --all-targets);" \
        "checking queries against a scratch database instead"
    local name=stayler_query_check digest current file
    digest=$(cat migrations/*.sql | sha256sum | cut -c1-64)
    current=$(psql "$admin" -qtAc \
        "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = '$name'")
    if [ "$current" != "$digest" ]; then
        psql "$admin" -qc "SET client_min_messages = warning; DROP DATABASE IF EXISTS $name WITH (FORCE)" >/dev/null
        psql "$admin" -qc "CREATE DATABASE $name" >/dev/null
        for file in migrations/*.sql; do
            psql "${admin%/*}/$name" -q -v ON_ERROR_STOP=1 -f "$file" >/dev/null
        done
        psql "$admin" -qc "COMMENT ON DATABASE $name IS '$digest'" >/dev/null
    fi
    export DATABASE_URL="${admin%/*}/$name"
}
