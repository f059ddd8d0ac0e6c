#!/usr/bin/env bash
# cluster/local.sh: a real multi-node Ray cluster on this machine.
#
#   cluster/local.sh up N      start a Ray head plus N worker nodes (N >= 0)
#   cluster/local.sh up --autoscale N
#                              a head with 0 CPUs and an autoscaler that adds up to N
#                              worker nodes on demand and removes idle ones, as a cloud
#                              cluster does (Ray's fake_multinode provider: each node is
#                              a set of local processes)
#   cluster/local.sh down      stop exactly the processes `up` started
#   cluster/local.sh status    say whether the cluster is up (exit 0 up, 3 down)
#   cluster/local.sh kill I    SIGKILL every process of worker node I (1..N): node loss, for chaos tests
#   cluster/local.sh address   print the address to pass to --address
#   cluster/local.sh token     make sure this machine has a Ray auth token (as `up` does) and
#                              print its file and a fingerprint (never the token itself)
#   cluster/local.sh clean     remove the state (and fallback log) directory; cluster must be down
#
# Every node is a separate `ray start` with its own node-manager, object-manager,
# agent, metrics and worker ports, its own CPU count and a custom resource
# `local-node-<i>` (head = 0) so that tasks can be pinned to a node. Token
# authentication is on: RAY_AUTH_MODE=token is exported for every `ray start`;
# drivers need `export RAY_AUTH_MODE=token` too.
#
# How `down` finds its processes (and only its processes):
#   * each `ray start` runs under `setsid`, so the gcs_server, raylet, dashboard,
#     monitor, agents and every worker the raylet forks later share a session id
#     that belongs to that node alone; the session ids are recorded in the
#     state directory (with the PIDs at start-up, in `pids`);
#   * Ray's own processes carry the cluster's private --temp-dir in their command
#     line (--temp-dir=, --temp_dir=, --session-dir=, --logs-dir=, ...); a
#     recorded session counts only while one of its processes still does, so a
#     stale state can never match a session id that was reused;
#   * plus all descendants of the processes found so.
#   `down` sends SIGTERM in `ray stop`'s order (raylets, helpers, gcs_server),
#   then SIGKILL after GRACE_PERIOD. It never runs `ray stop` (that would stop
#   every Ray on the machine, other users' included).
#
# Environment (all optional):
#   RESNET_SEARCH_CLUSTER_DIR  state directory (default: <repo>/.resnet-search/cluster)
#   RAY                        the `ray` executable (default: <repo>/.venv/bin/ray, else PATH)
#   RAY_PORT                   GCS port of the head (default 6390); the nodes use the
#                              ports from RAY_PORT+10 upwards (PORTS_PER_NODE each)
#   DASHBOARD_PORT             dashboard port, bound to 127.0.0.1 (default RAY_PORT+1)
#   CPUS_PER_NODE              --num-cpus of every node (default 1)
#   GPUS_PER_NODE              --num-gpus of every node (default 0)
#   HEAD_CPUS                  --num-cpus of the head (default CPUS_PER_NODE)
#   OBJECT_STORE_MEMORY        bytes of object store per node (default 300000000)
#   WORKER_PORTS_PER_NODE      size of each node's worker port range (default 100)
#   RAY_TEMP_DIR               Ray's --temp-dir (default <state>/ray, or a short
#                              directory under /tmp when that path is too long for
#                              Ray's unix sockets)
#   UP_TIMEOUT                 seconds to wait for all nodes to be alive (default 90)
#   GRACE_PERIOD               seconds `down` waits after SIGTERM before SIGKILL (default 15)
#   WORKER_PRIVATE_DIR         (tests) worker nodes see an empty private tmpfs over this
#                              folder, as nodes that do not share it would (needs root)
set -Eeuo pipefail

PROG=${0##*/}
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

STATE_DIR=${RESNET_SEARCH_CLUSTER_DIR:-$REPO_ROOT/.resnet-search/cluster}
case $STATE_DIR in /*) ;; *) STATE_DIR=$PWD/$STATE_DIR ;; esac

RAY_PORT=${RAY_PORT:-6390}
DASHBOARD_PORT=${DASHBOARD_PORT:-$((RAY_PORT + 1))}
CPUS_PER_NODE=${CPUS_PER_NODE:-1}
GPUS_PER_NODE=${GPUS_PER_NODE:-0}
HEAD_CPUS=${HEAD_CPUS:-$CPUS_PER_NODE}
OBJECT_STORE_MEMORY=${OBJECT_STORE_MEMORY:-300000000}
WORKER_PORTS_PER_NODE=${WORKER_PORTS_PER_NODE:-100}
PORTS_PER_NODE=$((WORKER_PORTS_PER_NODE + 10))
UP_TIMEOUT=${UP_TIMEOUT:-90}
GRACE_PERIOD=${GRACE_PERIOD:-15}

die() { echo "$PROG: $*" >&2; exit 2; }
log() { echo "$PROG: $*" >&2; }

# ---------------------------------------------------------------- executables
resolve_ray() {
    if [[ -n ${RAY:-} ]]; then
        command -v "$RAY" >/dev/null 2>&1 || die "RAY=$RAY is not executable"
        RAY=$(command -v "$RAY")
    elif [[ -x $REPO_ROOT/.venv/bin/ray ]]; then
        RAY=$REPO_ROOT/.venv/bin/ray
    elif command -v ray >/dev/null 2>&1; then
        RAY=$(command -v ray)
    else
        die "no 'ray' executable: create the venv (make) or set RAY=/path/to/ray"
    fi
    # The python that owns this ray installation (used for the port check and
    # the readiness probe).
    if [[ -x $(dirname "$RAY")/python ]]; then
        PY=$(dirname "$RAY")/python
    else
        PY=${PYTHON:-python3}
    fi
}

# ---------------------------------------------------------------- state
state_get() {  # state_get KEY -> value from $STATE_DIR/state.env ('' if none)
    local f=$STATE_DIR/state.env
    [[ -f $f ]] || { echo ""; return 0; }
    sed -n "s/^$1=//p" "$f" | tail -n 1
}

# Print the PIDs (one per line) of every live process that belongs to the
# cluster described by $1 (space separated session ids) and $2 (ray temp dir).
# A recorded session id counts only while a process of that session still
# carries the temp dir (so a session id reused by an unrelated process after a
# reboot is never matched), unless $3 is "trust" (used by `down` between its
# rounds, after the sessions were validated once).
cluster_pids() {
    local sids=$1 tmp=$2 trust=${3:-}
    [[ -n $sids || -n $tmp ]] || return 0
    # The temp dir goes through the environment, not argv, so that awk's own
    # command line never matches.
    ps -ww -U "$(id -u)" -o pid=,ppid=,sid=,args= 2>/dev/null |
        CL_SIDS=$sids CL_TMP=$tmp CL_SELF=$$ CL_TRUST=$trust awk '
        BEGIN {
            n = split(ENVIRON["CL_SIDS"], s, " ")
            for (i = 1; i <= n; i++) if (s[i] != "") want[s[i]] = 1
            tmp = ENVIRON["CL_TMP"]; self = ENVIRON["CL_SELF"]; trust = ENVIRON["CL_TRUST"]
        }
        function has_tmp_flag(a,    flags, k, p, c) {
            # Ray passes its temp dir as one of these flags (gcs_server, raylet,
            # dashboard, monitor, log_monitor, agents, workers before renaming).
            split("--temp-dir= --temp_dir= --session-dir= --session_dir= --logs-dir= --log-dir= --log_dir=", flags, " ")
            for (k in flags) {
                p = index(a, flags[k] tmp)
                if (p == 0) continue
                c = substr(a, p + length(flags[k] tmp), 1)
                if (c == "" || c == "/" || c == " ") return 1
            }
            return 0
        }
        {
            pid = $1; ppid = $2; sid = $3
            args = $0; sub(/^ *[0-9]+ +[0-9]+ +[0-9]+ /, "", args)
            if (pid == self) next
            parent[pid] = ppid; session[pid] = sid; order[++count] = pid
            if (tmp != "" && has_tmp_flag(args)) { mark[pid] = 1; if (sid in want) valid[sid] = 1 }
        }
        END {
            for (i = 1; i <= count; i++) {
                p = order[i]
                if ((session[p] in want) && (trust == "trust" || (session[p] in valid))) mark[p] = 1
            }
            # Close over descendants (workers fork from the raylet and rename
            # themselves ray::IDLE, ray::ImplicitFunc.train, ...).
            changed = 1
            while (changed) {
                changed = 0
                for (i = 1; i <= count; i++) {
                    p = order[i]
                    if (!(p in mark) && (parent[p] in mark)) { mark[p] = 1; changed = 1 }
                }
            }
            for (p in mark) print p
        }'
}

# The session ids of the state that are still the cluster's (validated).
live_sids() {
    local sids tmp pid sid out=""
    sids=$(state_get SIDS)
    tmp=$(state_get TEMP_DIR)
    for pid in $(cluster_pids "" "$tmp"); do
        sid=$(ps -o sid= -p "$pid" 2>/dev/null | tr -d ' ') || continue
        [[ " $sids " == *" $sid "* && " $out " != *" $sid "* ]] && out="$out $sid"
    done
    echo "${out# }"
}

current_pids() {
    cluster_pids "$(state_get SIDS)" "$(state_get TEMP_DIR)"
}

# ---------------------------------------------------------------- commands
# The autoscaling config of `up --autoscale N` (the launcher's format): a head type that
# offers no CPUs, one worker type of CPUS_PER_NODE CPUs, from 0 up to N nodes. The
# provider starts nodes as local processes; node updaters and the launch-config check
# would try to reach each node over SSH, so they are off.
write_autoscaling_config() {  # write_autoscaling_config FILE N
    local gpus=""
    ((GPUS_PER_NODE > 0)) && gpus=", GPU: $GPUS_PER_NODE"
    cat >"$1" <<EOF
cluster_name: resnet-search-local
max_workers: $2
upscaling_speed: 10.0
idle_timeout_minutes: ${IDLE_TIMEOUT_MINUTES:-1}
provider:
  type: fake_multinode
  gcs_address: "127.0.0.1:$RAY_PORT"
  disable_node_updaters: true
  disable_launch_config_check: true
auth:
  ssh_user: ray
available_node_types:
  ray.head.default:
    resources: {CPU: 0}
    node_config: {}
    max_workers: 0
  cpu_worker:
    resources: {CPU: $CPUS_PER_NODE$gpus, object_store_memory: $OBJECT_STORE_MEMORY}
    node_config: {}
    min_workers: 0
    max_workers: $2
head_node_type: ray.head.default
file_mounts: {}
cluster_synced_files: []
file_mounts_sync_continuously: false
rsync_exclude: []
rsync_filter: []
initialization_commands: []
setup_commands: []
head_setup_commands: []
worker_setup_commands: []
head_start_ray_commands: []
worker_start_ray_commands: []
EOF
}

# The token every node and driver of the clusters on this machine share, made where missing
# under the lock that studies take too (search/study/ray_token.py): Ray's own generator
# checks for the file and then writes a new one, so two clusters started at once on a
# fresh machine each wrote theirs, and the first one's nodes then refused every driver.
ensure_token() {  # ensure_token [--describe]: then print the token's file and fingerprint
    PYTHONPATH="$REPO_ROOT${PYTHONPATH:+:$PYTHONPATH}" "$PY" -m search.study.ray_token "$@" \
        || die "could not create the Ray auth token ~/.ray/auth_token"
}

cmd_token() {
    resolve_ray
    ensure_token --describe
}

cmd_up() {
    local autoscale=0
    if [[ ${1:-} == --autoscale ]]; then autoscale=1; shift; fi
    local n=${1:-}
    [[ $n =~ ^[0-9]+$ ]] || die "usage: $PROG up [--autoscale] N   (N = number of worker nodes, e.g. 2)"
    ((autoscale == 0 || n >= 1)) || die "up --autoscale $n: the autoscaler needs room for at least 1 worker node"
    resolve_ray
    command -v setsid >/dev/null 2>&1 || die "'setsid' (util-linux) is required"

    if [[ -f $STATE_DIR/state.env ]]; then
        if [[ -n $(current_pids) ]]; then
            die "a cluster is already up at $(state_get ADDRESS) (state: $STATE_DIR); run '$PROG down' first"
        fi
        rm -f "$STATE_DIR/state.env" "$STATE_DIR/pids"
    fi
    mkdir -p "$STATE_DIR"

    local temp_dir=${RAY_TEMP_DIR:-$STATE_DIR/ray}
    # Ray puts unix sockets under <temp>/session_<date>_<pid>/sockets/plasma_store
    # and a socket path must stay under 108 bytes.
    if [[ -z ${RAY_TEMP_DIR:-} && ${#temp_dir} -gt 44 ]]; then
        temp_dir=$(mktemp -d /tmp/rs-ray.XXXXXX)
        ln -sfn "$temp_dir" "$STATE_DIR/ray"
    fi
    mkdir -p "$temp_dir"
    temp_dir=$(cd "$temp_dir" && pwd -P)

    local last_port=$((RAY_PORT + 10 + (n + 1) * PORTS_PER_NODE - 1))
    ((last_port < 65536)) || die "RAY_PORT=$RAY_PORT leaves no room for $((n + 1)) nodes below 65536"
    "$PY" - "$RAY_PORT" "$DASHBOARD_PORT" "$((RAY_PORT + 10))" "$last_port" <<'EOF' || die "set RAY_PORT to a free range (see above)"
import socket, sys
gcs, dash, lo, hi = map(int, sys.argv[1:])
busy = []
for port in [gcs, dash, *range(lo, hi + 1)]:
    with socket.socket() as s:
        try:
            s.bind(("", port))
        except OSError:
            busy.append(port)
if busy:
    sys.exit(f"ports in use: {busy[:10]}{' ...' if len(busy) > 10 else ''}")
EOF

    export RAY_AUTH_MODE=token
    export RAY_USAGE_STATS_ENABLED=0
    ensure_token

    local my_sid
    my_sid=$(ps -o sid= -p $$ | tr -d ' ')
    {
        echo "RAY_PORT=$RAY_PORT"
        echo "DASHBOARD_PORT=$DASHBOARD_PORT"
        echo "TEMP_DIR=$temp_dir"
        echo "NODES=$((n + 1))"
        echo "AUTOSCALE=$autoscale"
        echo "RAY=$RAY"
    } >"$STATE_DIR/state.env"
    local started=$n alive=$((n + 1))
    if ((autoscale)); then
        # Only the head is started; the autoscaler, running in it, starts the rest. Its
        # nodes take their temp dir from RAY_TMPDIR (so `down` finds them by it) and are
        # descendants of the head's monitor, in the head's session.
        write_autoscaling_config "$STATE_DIR/autoscaling.yaml" "$n"
        export RAY_FAKE_CLUSTER=1 RAY_TMPDIR=$temp_dir
        started=0 alive=1
    fi

    # From here on a failure tears down whatever was started.
    trap 'log "start failed; stopping what was started (logs: $temp_dir)"; cmd_down >&2 || true; exit 1' ERR

    local sids="" address="" i
    : >"$STATE_DIR/up.log"
    for ((i = 0; i <= started; i++)); do
        local base=$((RAY_PORT + 10 + i * PORTS_PER_NODE))
        local cpus=$CPUS_PER_NODE
        local args=(
            --node-ip-address 127.0.0.1
            --node-manager-port "$base"
            --object-manager-port "$((base + 1))"
            --dashboard-agent-listen-port "$((base + 2))"
            --dashboard-agent-grpc-port "$((base + 3))"
            --runtime-env-agent-port "$((base + 4))"
            --metrics-export-port "$((base + 5))"
            --min-worker-port "$((base + 10))"
            --max-worker-port "$((base + 10 + WORKER_PORTS_PER_NODE - 1))"
            --num-gpus "$GPUS_PER_NODE"
            --object-store-memory "$OBJECT_STORE_MEMORY"
            --resources "{\"local-node-$i\": 1}"
            --temp-dir "$temp_dir"
            --disable-usage-stats
        )
        if ((i == 0)); then
            cpus=$HEAD_CPUS
            args=(--head --port "$RAY_PORT" --dashboard-host 127.0.0.1
                --dashboard-port "$DASHBOARD_PORT" "${args[@]}")
            if ((autoscale)); then
                cpus=0
                args+=(--autoscaling-config "$STATE_DIR/autoscaling.yaml")
            fi
        else
            args=(--address "$address" "${args[@]}")
        fi
        args+=(--num-cpus "$cpus")
        log "starting node $i ($([[ $i == 0 ]] && echo head || echo worker), $cpus CPU)"
        echo "+ setsid ray start ${args[*]}" >>"$STATE_DIR/up.log"
        # Started from the repository root: Ray workers inherit the raylet's
        # working directory, so relative paths in a study resolve as they do for
        # a driver run from the repository root.
        local launcher=("$RAY" start)
        if ((i > 0)) && [[ -n ${WORKER_PRIVATE_DIR:-} ]]; then
            # Test aid: this worker gets its own mount namespace with an empty tmpfs
            # over WORKER_PRIVATE_DIR, like a node that does not share that folder.
            launcher=(unshare -m --propagation private sh -c
                'mount -t tmpfs tmpfs "$0" && exec "$@"' "$WORKER_PRIVATE_DIR" "$RAY" start)
        fi
        if ! (cd "$REPO_ROOT" && setsid --wait "${launcher[@]}" "${args[@]}") >>"$STATE_DIR/up.log" 2>&1; then
            tail -n 20 "$STATE_DIR/up.log" >&2
            false
        fi
        # The session of this node: the one its processes (found by temp dir)
        # are in and that no earlier node, nor this script, owns.
        local sid new="" found
        found=$(cluster_pids "" "$temp_dir" | paste -sd, -)
        [[ -n $found ]] || { log "cannot find the processes of node $i"; false; }
        for sid in $(ps -o sid= -p "$found" | sort -u); do
            [[ $sid == "$my_sid" || $sid -le 1 ]] && continue
            [[ " $sids " == *" $sid "* ]] && continue
            new="$new $sid"
        done
        [[ -n $new ]] || { log "cannot find the processes of node $i"; false; }
        sids="$sids$new"
        sed -i '/^SIDS=/d' "$STATE_DIR/state.env"
        echo "NODE_${i}_SIDS=${new# }" >>"$STATE_DIR/state.env"
        echo "SIDS=${sids# }" >>"$STATE_DIR/state.env"
        if ((i == 0)); then
            # Ray on Linux replaces 127.0.0.1 by the host's own IP in the node
            # addresses (it records e.g. 10.0.0.5:6390 in ray_current_cluster);
            # the GCS listens on every interface, so the loopback address works
            # for drivers on this machine and is what we hand out.
            address=127.0.0.1:$RAY_PORT
            echo "ADDRESS=$address" >>"$STATE_DIR/state.env"
            echo "RAY_NODE_ADDRESS=$(cat "$temp_dir/ray_current_cluster" 2>/dev/null || true)" \
                >>"$STATE_DIR/state.env"
        fi
    done

    log "waiting for $alive node(s) to be alive"
    "$PY" - "$address" "$alive" "$UP_TIMEOUT" "$STATE_DIR/nodes" <<'EOF' >>"$STATE_DIR/up.log" 2>&1 || { tail -n 5 "$STATE_DIR/up.log" >&2; false; }
import sys, time
import ray
address, want, timeout = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
ray.init(address=address, logging_level="ERROR", log_to_driver=False)
deadline = time.time() + timeout
while True:
    alive = [n for n in ray.nodes() if n["Alive"]]
    if len(alive) >= want:
        print(f"{len(alive)} nodes alive")
        # Which Ray node id is node i (its custom resource local-node-<i>), for `kill` and tests.
        ids = {r: n["NodeID"] for n in alive for r in n["Resources"] if r.startswith("local-node-")}
        with open(sys.argv[4], "w") as f:
            f.writelines(f"{r.removeprefix('local-node-')} {i}\n" for r, i in sorted(ids.items()))
        break
    if time.time() > deadline:
        sys.exit(f"only {len(alive)} of {want} nodes alive after {timeout:.0f} s")
    time.sleep(0.5)
EOF
    trap - ERR

    current_pids | sort -n >"$STATE_DIR/pids"
    echo "$address" >"$STATE_DIR/address"

    local shape="head + $n worker node(s) on this machine, $CPUS_PER_NODE CPU(s) per node"
    ((autoscale)) && shape="head with 0 CPUs and an autoscaler that adds up to $n worker node(s) of $CPUS_PER_NODE CPU(s) on demand"
    cat <<EOF
Ray cluster up: $shape
  address:     $address
  processes:   $(wc -l <"$STATE_DIR/pids") (PIDs in $STATE_DIR/pids)
  dashboard:   http://127.0.0.1:$DASHBOARD_PORT (loopback only)
  logs:        $temp_dir/session_latest/logs

Token authentication is on. In the shell that runs the driver:
  export RAY_AUTH_MODE=token
  export RAY_ADDRESS=$address
  resnet-search run configs/quickstart.toml --address $address

Stop exactly these processes with: cluster/local.sh down
EOF
}

# Send $1 to the PIDs given on stdin that match the selector ($2: raylet|gcs|other|all)
# and wait up to $3 seconds for them to exit.
signal_bucket() {
    local sig=$1 which=$2 wait_s=$3 pid comm targets=()
    while read -r pid; do
        [[ -n $pid ]] || continue
        comm=$(ps -o comm= -p "$pid" 2>/dev/null) || continue
        case $which in
        raylet) [[ $comm == raylet ]] || continue ;;
        gcs) [[ $comm == gcs_server ]] || continue ;;
        other) [[ $comm == raylet || $comm == gcs_server ]] && continue ;;
        esac
        targets+=("$pid")
    done
    ((${#targets[@]})) || return 0
    kill "-$sig" "${targets[@]}" 2>/dev/null || true
    local deadline=$((SECONDS + wait_s))
    while ((SECONDS < deadline)); do
        local alive=0
        for pid in "${targets[@]}"; do
            kill -0 "$pid" 2>/dev/null && alive=1 && break
        done
        ((alive)) || return 0
        sleep 0.2
    done
}

cmd_down() {
    if [[ ! -f $STATE_DIR/state.env ]]; then
        echo "no cluster state in $STATE_DIR: nothing to stop"
        return 0
    fi
    local sids tmp pids
    # Validate the recorded sessions once; the rounds below trust them even
    # after the processes that carry the temp dir have gone.
    sids=$(live_sids)
    tmp=$(state_get TEMP_DIR)
    pids=$(cluster_pids "$sids" "$tmp" trust)
    if [[ -z $pids ]]; then
        echo "cluster already down"
        rm -f "$STATE_DIR/state.env" "$STATE_DIR/address"
        return 0
    fi
    local count
    count=$(echo "$pids" | wc -l)
    echo "stopping $count processes of the cluster at $(state_get ADDRESS)"
    # Same order as `ray stop`: raylets first, then the helpers, gcs_server last.
    local per=$(((GRACE_PERIOD + 2) / 3))
    signal_bucket TERM raylet "$per" <<<"$(cluster_pids "$sids" "$tmp" trust)"
    signal_bucket TERM other "$per" <<<"$(cluster_pids "$sids" "$tmp" trust)"
    signal_bucket TERM gcs "$per" <<<"$(cluster_pids "$sids" "$tmp" trust)"
    pids=$(cluster_pids "$sids" "$tmp" trust)
    if [[ -n $pids ]]; then
        echo "SIGKILL to $(echo "$pids" | wc -l) processes still alive after SIGTERM"
        signal_bucket KILL all 5 <<<"$pids"
    fi
    pids=$(cluster_pids "$sids" "$tmp" trust)
    if [[ -n $pids ]]; then
        log "processes still alive: $(echo "$pids" | paste -sd' ' -)"
        return 1
    fi
    rm -f "$STATE_DIR/state.env" "$STATE_DIR/address"
    echo "cluster stopped (logs kept in $tmp)"
}

cmd_status() {
    if [[ ! -f $STATE_DIR/state.env ]]; then
        echo "down (no state in $STATE_DIR)"
        return 3
    fi
    local pids
    pids=$(current_pids)
    if [[ -z $pids ]]; then
        echo "down (state in $STATE_DIR, no live process)"
        return 3
    fi
    echo "up: address $(state_get ADDRESS), $(state_get NODES) nodes started," \
        "$(echo "$pids" | wc -l) live processes (state: $STATE_DIR)"
}

# SIGKILL every process of worker node $1 (its sessions and their descendants), as a
# machine that loses power would; the other nodes and the head keep running.
cmd_kill() {
    local i=${1:-} node_sids sids="" sid pids
    [[ $i =~ ^[0-9]+$ ]] || die "usage: $PROG kill I   (I = a worker node, 1..N)"
    [[ -f $STATE_DIR/state.env && -n $(current_pids) ]] || die "no cluster up (state: $STATE_DIR)"
    [[ $(state_get AUTOSCALE) != 1 ]] || die "kill $i: the autoscaler adds and removes the nodes of this cluster; kill is for one started with 'up N'"
    ((i >= 1)) || die "kill $i: node 0 is the head; kill a worker node (1..$(($(state_get NODES) - 1)))"
    ((i < $(state_get NODES))) || die "kill $i: no such worker node (1..$(($(state_get NODES) - 1)))"
    node_sids=$(state_get "NODE_${i}_SIDS")
    [[ -n $node_sids ]] || die "kill $i: the state in $STATE_DIR does not record node $i's sessions"
    local valid=" $(live_sids) "
    for sid in $node_sids; do [[ $valid == *" $sid "* ]] && sids="$sids $sid"; done
    pids=""
    [[ -z $sids ]] || pids=$(cluster_pids "${sids# }" "" trust)
    [[ -n $pids ]] || { echo "node $i is already down"; return 0; }
    echo "SIGKILL to $(echo "$pids" | wc -l) processes of node $i"
    signal_bucket KILL all 10 <<<"$pids"
    pids=$(cluster_pids "${sids# }" "" trust)
    [[ -z $pids ]] || die "kill $i: processes still alive: $(echo "$pids" | paste -sd' ' -)"
    echo "node $i killed"
}

cmd_address() {
    [[ -f $STATE_DIR/state.env && -n $(current_pids) ]] || die "no cluster up (state: $STATE_DIR)"
    state_get ADDRESS
}

cmd_clean() {
    if [[ -f $STATE_DIR/state.env && -n $(current_pids) ]]; then
        die "the cluster is up; run '$PROG down' first"
    fi
    local link=$STATE_DIR/ray
    if [[ -L $link ]]; then
        local target
        target=$(readlink "$link")
        [[ $target == /tmp/rs-ray.* ]] && rm -rf "$target"
    fi
    rm -rf "$STATE_DIR"
    echo "removed $STATE_DIR"
}

case ${1:-} in
up) shift; cmd_up "$@" ;;
down) cmd_down ;;
status) cmd_status ;;
address) cmd_address ;;
token) cmd_token ;;
kill) shift; cmd_kill "$@" ;;
clean) cmd_clean ;;
-h | --help | help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//' ;;
*) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
