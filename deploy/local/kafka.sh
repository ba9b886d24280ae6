#!/usr/bin/env bash
# Single-node Apache Kafka in KRaft mode, jars from Maven Central.
# Usage: kafka.sh install|start|stop|status
# Ports: TICKWIRE_LOCAL_KAFKA_PORT (PLAINTEXT), ..._CONTROLLER_PORT, ..._SASL_PORT (SASL/SCRAM-SHA-512,
# user "tickwire", password generated into var/kafka/sasl-password when the storage is formatted).
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
KDIR="$VAR/kafka"
LIBS="$ROOT/var/lib/kafka"  # shared by the demo and test brokers
PIDFILE="$KDIR/broker.pid"

install() {
    command -v java >/dev/null || apt_install openjdk-17-jre-headless
    command -v mvn >/dev/null || apt_install maven
    if [ ! -f "$LIBS/.complete" ]; then
        say "fetching the Kafka broker jars from Maven Central (mvn)"
        rm -rf "$LIBS"
        mvn -q -B -f "$ROOT/deploy/local/kafka/pom.xml" dependency:copy-dependencies \
            -DincludeScope=runtime -DoutputDirectory="$LIBS" >"$LOGS/mvn.log" 2>&1 \
            || die "mvn could not fetch the Kafka jars, see $LOGS/mvn.log"
        touch "$LIBS/.complete"
    fi
}

running() { [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; }

start() {
    install
    if running; then say "kafka already running (pid $(cat "$PIDFILE")) on 127.0.0.1:$KAFKA_PORT"; return; fi
    local conf="$KDIR/server.properties"
    mkdir -p "$KDIR"
    # The log is flushed every second: it shares a disk with PostgreSQL here, and left to the
    # kernel its writes pile up for 30 s and go out in one burst that PostgreSQL's commits
    # wait behind (bench_latency: those seconds were most of the sink's p99). It also bounds
    # what this one unreplicated broker can lose in a machine crash.
    cat >"$conf" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT,SASL_PLAINTEXT://127.0.0.1:$KAFKA_SASL_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,SASL_PLAINTEXT://127.0.0.1:$KAFKA_SASL_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT
sasl.enabled.mechanisms=SCRAM-SHA-512
listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
log.dirs=$KDIR/data
num.partitions=6
offsets.topic.replication.factor=1
offsets.topic.num.partitions=6
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=true
message.max.bytes=11534336
log.flush.interval.ms=1000
log.flush.scheduler.interval.ms=1000
PROPS
    local cp="$LIBS/*"
    if [ ! -f "$KDIR/data/meta.properties" ]; then
        local cluster_id
        cluster_id="$(java -cp "$cp" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -1)"
        (umask 077; head -c 18 /dev/urandom | base64 | tr -d '/+=' >"$KDIR/sasl-password")
        java -cp "$cp" kafka.tools.StorageTool format -t "$cluster_id" -c "$conf" \
            --add-scram "SCRAM-SHA-512=[name=tickwire,password=$(cat "$KDIR/sasl-password")]" >>"$LOGS/kafka.log" 2>&1 \
            || die "formatting KRaft storage failed, see $LOGS/kafka.log"
    fi
    say "starting kafka on 127.0.0.1:$KAFKA_PORT (log: $LOGS/kafka.log)"
    nohup java -Xms256m -Xmx1g -XX:+UseG1GC -Dlog4j2.configurationFile="$ROOT/deploy/local/kafka/log4j2.properties" \
        -cp "$cp" kafka.Kafka "$conf" >>"$LOGS/kafka.log" 2>&1 &
    echo $! >"$PIDFILE"
    wait_port "$KAFKA_PORT" 90 || die "kafka did not open port $KAFKA_PORT in 90 s, see $LOGS/kafka.log"
}

stop() {
    if running; then
        local pid; pid="$(cat "$PIDFILE")"
        say "stopping kafka (pid $pid)"
        kill "$pid"
        for _ in $(seq 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
        kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$PIDFILE"
}

status() { if running; then echo "kafka: running on 127.0.0.1:$KAFKA_PORT"; else echo "kafka: stopped"; return 3; fi; }

case "${1:-}" in
    install|start|stop|status) "$1" ;;
    *) die "usage: kafka.sh install|start|stop|status" ;;
esac
