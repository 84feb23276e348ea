#!/bin/sh
# cistern for boot2docker: /var/lib/boot2docker/bootsync.sh.
#
# boot2docker runs this (`sh /var/lib/boot2docker/bootsync.sh`) at every
# boot, once the persistent partition is mounted on /mnt/sda1 (with
# /var/lib/boot2docker on it) and before it starts dockerd. Its root file
# system is rebuilt in RAM at each boot, hence every boot.
#
# It makes dockerd serve only its own unix socket, root's alone: the dockerd
# wrapper from /var/lib/boot2docker/cistern replaces /usr/local/bin/dockerd
# (the real one becomes dockerd.real). cistern takes the TCP port (2376) that
# boot2docker's init script and docker-machine's profile give dockerd, with
# the same TLS files; bootlocal.sh starts it.
set -e

home=/var/lib/boot2docker/cistern
dockerd=/usr/local/bin/dockerd

if [ ! -x "$home/cistern" ] || [ ! -f "$home/cistern.yaml" ]; then
    echo "cistern: $home/cistern or $home/cistern.yaml is missing; dockerd left as it is" >&2
    exit 0
fi

if ! cmp -s "$home/dockerd" "$dockerd"; then
    [ -e "$dockerd.real" ] || mv "$dockerd" "$dockerd.real"
    cp "$home/dockerd" "$dockerd"
    chmod 0755 "$dockerd"
fi

# State (tenants' images, job sockets, CA keys) and the disk cache live on
# the persistent partition, next to /var/lib/docker.
mkdir -p "$home/state" "$home/cache" "$home/tls" /var/lib/boot2docker/log
chmod 0700 "$home/state" "$home/tls"
