#!/bin/sh
# cistern for boot2docker: /var/lib/boot2docker/bootlocal.sh.
#
# boot2docker runs this in the background (`sh /var/lib/boot2docker/bootlocal.sh &`)
# once its init script has started dockerd. It starts cistern from the
# persistent partition and starts it again whenever it exits: boot2docker
# has no service manager. cistern's log: /var/lib/boot2docker/log/cistern.log;
# its pid: /var/run/cistern.pid (the dockerd wrapper sends it SIGHUP to read
# renewed TLS files).

home=/var/lib/boot2docker/cistern
log=/var/lib/boot2docker/log/cistern.log

supervise() {
    while :; do
        # cistern starts without a daemon, but its first calls would fail.
        i=0
        while [ ! -S /var/run/docker.sock ] && [ "$i" -lt 60 ]; do
            sleep 1
            i=$((i + 1))
        done
        "$home/cistern" serve --config "$home/cistern.yaml" >>"$log" 2>&1 &
        echo "$!" >/var/run/cistern.pid
        wait "$!"
        echo "bootlocal.sh: cistern exited with status $?; starting it again in 2s" >>"$log"
        sleep 2
    done
}

if [ -x "$home/cistern" ] && [ -f "$home/cistern.yaml" ]; then
    mkdir -p /var/lib/boot2docker/log
    supervise </dev/null >>"$log" 2>&1 &
fi
