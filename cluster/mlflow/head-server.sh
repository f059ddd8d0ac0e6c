#!/usr/bin/env bash
# The MLflow tracking server of a launcher cluster (cluster/aws.yaml, cluster/gcp.yaml),
# run on the head node, where the study driver runs: basic auth as in mlflow.yaml,
# bound to the head's loopback (no port opens on any network; a laptop reaches it
# through `ray dashboard CONFIG --port 5000 --remote-port 5000`, an SSH tunnel).
#
# Runs, metrics, the auth users and the artifacts (checkpoints, models, proxied by the
# server) live on the shared volume, so they outlive `ray down` and a new head finds
# them. SQLite there is written by this one server process only. For a team server,
# put PostgreSQL URIs (postgresql+psycopg2://...) into server.env as
# MLFLOW_BACKEND_STORE_URI and MLFLOW_AUTH_DATABASE_URI.
#
# Credentials are generated here on first start (never in a file of the repository):
#   $MLFLOW_HOME/server.env  the admin account and the Flask secret key (the server's)
#   $MLFLOW_HOME/client.env  MLFLOW_TRACKING_URI/_USERNAME/_PASSWORD of the studies'
#                            user (not the admin), for the driver: the study command
#                            reads it (cluster/README.md, section 2)
# both mode 600, in a folder of mode 700 that belongs to the ssh user.
#
# Every `ray up` runs it again (head_start_ray_commands): it stops the server it
# started before (by its recorded PID, nothing else) and starts it with the same
# credentials. Settings: MLFLOW_HOME (default /mnt/shared/mlflow), MLFLOW_PORT
# (5000), MLFLOW_STATE (PID, log and auth config on this node, ~/.resnet-search/mlflow).
set -euo pipefail

home=${MLFLOW_HOME:-/mnt/shared/mlflow}
port=${MLFLOW_PORT:-5000}
state=${MLFLOW_STATE:-$HOME/.resnet-search/mlflow}
umask 077
mkdir -p "$home/artifacts" "$state"
chmod 700 "$home" "$state"

if [[ ! -s $home/server.env ]]; then
  printf '%s\n' "MLFLOW_TRACKING_URI=http://127.0.0.1:$port" "MLFLOW_TRACKING_USERNAME=resnet-search" \
    "MLFLOW_TRACKING_PASSWORD=$(openssl rand -hex 16)" > "$home/client.env"
  printf '%s\n' "MLFLOW_AUTH_ADMIN_USERNAME=admin" "MLFLOW_AUTH_ADMIN_PASSWORD=$(openssl rand -hex 16)" \
    "MLFLOW_FLASK_SERVER_SECRET_KEY=$(openssl rand -hex 32)" > "$home/server.env.new"
  mv "$home/server.env.new" "$home/server.env"
fi

# The server started by an earlier run on this node: stop it, and only it.
if [[ -s $state/server.pid ]]; then
  old=$(<"$state/server.pid")
  if [[ $(ps -o args= -p "$old" 2>/dev/null) == *"mlflow server"* ]]; then
    kill -TERM -- "-$old" 2>/dev/null || true
    for _ in $(seq 30); do kill -0 "$old" 2>/dev/null || break; sleep 1; done
    kill -KILL -- "-$old" 2>/dev/null || true
  fi
  rm -f "$state/server.pid"
fi

set -a
# shellcheck disable=SC1091
. "$home/server.env"
MLFLOW_BACKEND_STORE_URI=${MLFLOW_BACKEND_STORE_URI:-sqlite:///$home/mlflow.db}
MLFLOW_AUTH_DATABASE_URI=${MLFLOW_AUTH_DATABASE_URI:-sqlite:///$home/auth.db}
MLFLOW_AUTH_CONFIG_PATH=$state/basic_auth.ini
# As in mlflow.yaml: no GenAI job consumers; only the Host names of the loopback/tunnel.
MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false
MLFLOW_SERVER_ALLOWED_HOSTS="localhost,localhost:*,127.0.0.1,127.0.0.1:*"
set +a

# The auth config of mlflow.yaml (private, umask 077: its database URI may carry a
# credential).
cat > "$MLFLOW_AUTH_CONFIG_PATH" <<EOF
[mlflow]
default_permission = READ
database_uri = ${MLFLOW_AUTH_DATABASE_URI}
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
grant_default_workspace_access = false
EOF

# Its own session, so that the SSH session of `ray up` can end and a later run can
# stop the server with its workers.
setsid mlflow server --host 127.0.0.1 --port "$port" --workers 1 \
  --serve-artifacts --artifacts-destination "$home/artifacts" \
  --app-name basic-auth < /dev/null > "$state/server.log" 2>&1 &
echo $! > "$state/server.pid"

fail() {
  echo "resnet-search: $1; the MLflow server's log ($state/server.log):" >&2
  tail -n 20 "$state/server.log" >&2
  exit 1
}

for _ in $(seq 180); do
  curl -fs -o /dev/null "http://127.0.0.1:$port/health" && break
  kill -0 "$(<"$state/server.pid")" 2>/dev/null || fail "the MLflow server stopped"
  sleep 1
done
curl -fs -o /dev/null "http://127.0.0.1:$port/health" || fail "no MLflow server answers on port $port"

# The studies' user, not the admin: it creates and manages its own experiments and
# models and reads the others. Credentials reach curl on stdin, never as arguments.
# Creating the user again on a later start fails harmlessly; signing in must work.
(
  set -a
  # shellcheck disable=SC1091
  . "$home/client.env"
  set +a
  curl -s -o /dev/null -K - <<CURL || true
url = "http://127.0.0.1:$port/api/2.0/mlflow/users/create"
user = "$MLFLOW_AUTH_ADMIN_USERNAME:$MLFLOW_AUTH_ADMIN_PASSWORD"
header = "Content-Type: application/json"
data = "{\"username\": \"$MLFLOW_TRACKING_USERNAME\", \"password\": \"$MLFLOW_TRACKING_PASSWORD\"}"
CURL
  curl -fs -o /dev/null -K - <<CURL
url = "http://127.0.0.1:$port/api/2.0/mlflow/experiments/search?max_results=1"
user = "$MLFLOW_TRACKING_USERNAME:$MLFLOW_TRACKING_PASSWORD"
CURL
) || fail "the studies' user of $home/client.env cannot sign in"
echo "MLflow on http://127.0.0.1:$port (the driver's credentials: $home/client.env)"
