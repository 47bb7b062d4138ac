#!/usr/bin/env bash
# Makes sure a RabbitMQ broker answers on the configured host/port (default 127.0.0.1:5672).
# Starts the local rabbitmq-server if it is installed and not running; otherwise says how to start one.
set -euo pipefail
HOST="${CISIS_RABBITMQ_HOST:-127.0.0.1}"
PORT="${CISIS_RABBITMQ_PORT:-5672}"

answers() { (exec 3<>"/dev/tcp/$HOST/$PORT") 2>/dev/null; }

if answers; then
  echo "RabbitMQ answers on $HOST:$PORT"
  exit 0
fi
if command -v rabbitmq-server >/dev/null 2>&1; then
  echo "starting the local rabbitmq-server..."
  rabbitmq-server -detached >/dev/null 2>&1 || true
  for _ in $(seq 1 60); do
    if answers; then
      # the port opens before the broker accepts connections: wait for the node to be fully booted
      if command -v rabbitmqctl >/dev/null 2>&1; then rabbitmqctl await_startup >/dev/null 2>&1 || true; fi
      echo "RabbitMQ started on $HOST:$PORT"
      exit 0
    fi
    sleep 1
  done
  echo "rabbitmq-server did not open $HOST:$PORT within 60 s" >&2
  exit 1
fi
cat >&2 <<MSG
No RabbitMQ answers on $HOST:$PORT and rabbitmq-server is not installed here.
Start one with Docker:   docker compose up -d rabbitmq
or install it (Debian):  sudo apt-get install rabbitmq-server
MSG
exit 1
