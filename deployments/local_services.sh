#!/usr/bin/env bash
# Start/stop a local Prefect server and MLflow UI for the embedded profile (127.0.0.1 only).
set -euo pipefail
cd "$(dirname "$0")/.."
HOME_DIR=${MLOPS_HOME:-.mlops}
RUN=$HOME_DIR/run
mkdir -p "$RUN" "$HOME_DIR/prefect"
PREFECT_PORT=${PREFECT_PORT:-4200}
MLFLOW_PORT=${MLFLOW_PORT:-5000}

start() {
  if ! curl -sf "http://127.0.0.1:$PREFECT_PORT/api/health" >/dev/null 2>&1; then
    PREFECT_HOME=$HOME_DIR/prefect PREFECT_SERVER_ANALYTICS_ENABLED=false DO_NOT_TRACK=1 \
      nohup .venv/bin/prefect server start --host 127.0.0.1 --port "$PREFECT_PORT" \
      >"$RUN/prefect.log" 2>&1 &
    echo $! >"$RUN/prefect.pid"
  fi
  if ! curl -sf "http://127.0.0.1:$MLFLOW_PORT/health" >/dev/null 2>&1; then
    DO_NOT_TRACK=1 MLFLOW_DISABLE_TELEMETRY=true \
      nohup .venv/bin/mlflow server --host 127.0.0.1 --port "$MLFLOW_PORT" \
      --backend-store-uri "sqlite:///$(realpath "$HOME_DIR")/mlflow.db" \
      --artifacts-destination "$(realpath "$HOME_DIR")/mlartifacts" \
      >"$RUN/mlflow.log" 2>&1 &
    echo $! >"$RUN/mlflow.pid"
  fi
  for _ in $(seq 1 90); do
    curl -sf "http://127.0.0.1:$PREFECT_PORT/api/health" >/dev/null 2>&1 && break
    sleep 1
  done
  echo "Prefect UI: http://127.0.0.1:$PREFECT_PORT   (export PREFECT_API_URL=http://127.0.0.1:$PREFECT_PORT/api)"
  echo "MLflow UI:  http://127.0.0.1:$MLFLOW_PORT"
}

stop() {
  for name in prefect mlflow; do
    pidfile=$RUN/$name.pid
    [ -f "$pidfile" ] || continue
    pid=$(cat "$pidfile")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 15); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$pidfile"
  done
  echo "stopped"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
