#!/bin/sh
# Runs the shipped units under a real systemd (PID 1 of its own namespaces)
# and a failover drill through them — for machines without systemd as PID 1
# (CI containers), where `systemd-analyze verify` is all the test suite can
# do. Manual, not part of `cargo test` (it needs a Debian mirror and ~1 min).
#
#   sudo ops/systemd/lab-systemd-drill.sh target/debian/bgf_0.1.0-1_amd64.deb [WORKDIR]
#
# What it does: debootstraps Debian 12 (minbase + systemd) into WORKDIR
# (default /var/tmp/bgf-systemd-lab; reused if present), installs the .deb
# with dpkg in it, writes a statelog + active bgf1 + standby configuration
# (the active's unit joins network namespace "actns" — its "VM" — through a
# NetworkNamespacePath= drop-in, the standby and the store stay in the
# container's own namespace), boots systemd in new pid/mount/net/uts/ipc/
# cgroup namespaces (/sys and /proc/sys read-only, as systemd-nspawn does)
# and checks:
#   - the three units run as user bgf with exactly their capabilities,
#     no_new_privs and a seccomp filter;
#   - SIGSTOP of bgf-active@bgf1: the standby claims 198.18.10.11/32 and
#     198.18.20.11/32 and announces them;
#   - SIGCONT: the active is fenced, drops its addresses, exits 3, and the
#     unit is not restarted (Result=exit-code, ExecMainStatus=3, NRestarts=0).
# Exit 0 when all hold. The host keeps nothing but WORKDIR (the container's
# cgroup directory is removed at the end).
set -eu

DEB=${1:?usage: $0 BGF_DEB [WORKDIR]}
WORK=${2:-/var/tmp/bgf-systemd-lab}
R=$WORK/root
CG=/sys/fs/cgroup/unified/bgf-systemd-lab
[ -d /sys/fs/cgroup/unified ] || CG=/sys/fs/cgroup/bgf-systemd-lab
[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 1; }
for t in debootstrap unshare nsenter chroot; do
    command -v $t >/dev/null || { echo "$t is missing (apt-get install debootstrap util-linux)" >&2; exit 1; }
done

say() { printf '%s\n' "lab: $*" >&2; }
fail() { say "FAILED: $*"; exit 1; }

mkdir -p "$WORK"
if [ ! -x "$R/lib/systemd/systemd" ]; then
    say "debootstrap bookworm (minbase + systemd) into $R"
    debootstrap --variant=minbase --include=systemd,systemd-sysv,iproute2,dbus \
        bookworm "$R" http://deb.debian.org/debian >"$WORK/debootstrap.log" 2>&1 \
        || fail "debootstrap (see $WORK/debootstrap.log)"
fi
cp "$DEB" "$R/tmp/bgf.deb"
chroot "$R" dpkg -i /tmp/bgf.deb >"$WORK/dpkg.log" 2>&1 || fail "dpkg -i (see $WORK/dpkg.log)"

# Units a container must not run (they would touch the host's kernel).
for u in systemd-sysctl.service systemd-modules-load.service systemd-udevd.service \
    systemd-udev-trigger.service systemd-binfmt.service proc-sys-fs-binfmt_misc.automount \
    proc-sys-fs-binfmt_misc.mount systemd-remount-fs.service systemd-firstboot.service \
    getty.target console-getty.service systemd-hwdb-update.service kmod-static-nodes.service \
    sys-kernel-debug.mount sys-kernel-tracing.mount sys-kernel-config.mount \
    sys-fs-fuse-connections.mount dev-hugepages.mount dev-mqueue.mount \
    systemd-random-seed.service systemd-timesyncd.service systemd-pstore.service; do
    ln -sf /dev/null "$R/etc/systemd/system/$u"
done

cat >"$R/etc/systemd/system/lab-net.service" <<'EOF'
[Unit]
Description=lab: an "active VM" network namespace (actns) wired to this one (the standby's)
Before=bgf-statelog.service bgf-active@bgf1.service bgf-standby.service
[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/sh -ec 'ip netns add actns; ip -n actns link set lo up; \
  for p in acc cor mgm; do ip link add $${p}0 type veth peer name $${p}1; ip link set $${p}0 netns actns; ip -n actns link set $${p}0 up; ip link set $${p}1 up; done; \
  ip -n actns addr add 198.18.10.2/24 dev acc0; ip -n actns addr add 198.18.20.2/24 dev cor0; ip -n actns addr add 198.18.30.11/24 dev mgm0; \
  ip -n actns addr add 198.18.10.11/32 dev acc0; ip -n actns addr add 198.18.20.11/32 dev cor0; \
  ip addr add 198.18.10.3/24 dev acc1; ip addr add 198.18.20.3/24 dev cor1; ip addr add 198.18.30.99/24 dev mgm1'
[Install]
WantedBy=multi-user.target
EOF
mkdir -p "$R/etc/systemd/system/bgf-active@.service.d" "$R/etc/systemd/system/bgf-standby.service.d"
printf '[Unit]\nAfter=bgf-statelog.service lab-net.service\nWants=bgf-statelog.service\n[Service]\nNetworkNamespacePath=/run/netns/actns\n' \
    >"$R/etc/systemd/system/bgf-active@.service.d/lab.conf"
printf '[Unit]\nAfter=bgf-statelog.service lab-net.service bgf-active@bgf1.service\n' \
    >"$R/etc/systemd/system/bgf-standby.service.d/lab.conf"
echo 'BGF_STATELOG_LISTEN=198.18.30.99:7400' >"$R/etc/bgf/statelog.env"
cat >"$R/etc/bgf/bgf1.toml" <<'EOF'
[instance]
name = "bgf1"
secret = "lab-Mz5Kq9Xv3Nw7Rc2Lp8Tb4Hj6Yf1Gd0sAe"
[access]
sip = "198.18.10.11:5060"
rtp_ports = "20000-20999"
[core]
sip = "198.18.20.11:5060"
rtp_ports = "30000-30999"
next_hop = "198.18.20.5:5060"
[admin]
listen = "198.18.30.11:8080"
token = "lab-admin-token-0123456"
[statelog]
backend = "embedded"
addr = "198.18.30.99:7400"
ca = "/etc/bgf/pki/ca.pem"
cert = "/etc/bgf/pki/active-bgf1.pem"
key = "/etc/bgf/pki/active-bgf1.key"
[ha]
heartbeat = "198.18.30.11:7500"
standby = "198.18.30.99:7501"
EOF
cat >"$R/etc/bgf/standby.toml" <<'EOF'
[instance]
name = "sb1"
[standby]
access_interface = "acc1"
core_interface = "cor1"
[[standby.protect]]
config = "bgf1.toml"
[admin]
listen = "198.18.30.99:8080"
token = "lab-admin-token-0123456"
[statelog]
ca = "/etc/bgf/pki/ca.pem"
cert = "/etc/bgf/pki/standby-sb1.pem"
key = "/etc/bgf/pki/standby-sb1.key"
EOF
# The store's and its clients' credentials (the unit reads server-statelog).
chroot "$R" bgf gen-certs /etc/bgf/pki --server statelog=198.18.30.99 --active bgf1 --standby sb1 >/dev/null
chroot "$R" chgrp -R bgf /etc/bgf/pki
chmod 0640 "$R"/etc/bgf/pki/*.key
chroot "$R" chgrp bgf /etc/bgf/bgf1.toml /etc/bgf/standby.toml
chmod 0640 "$R/etc/bgf/bgf1.toml" "$R/etc/bgf/standby.toml"
rm -rf "$R/var/lib/bgf/statelog"
chroot "$R" systemctl enable lab-net.service bgf-statelog.service bgf-active@bgf1.service \
    bgf-standby.service >/dev/null 2>&1
chroot "$R" bgf check-config /etc/bgf/standby.toml >/dev/null || fail "check-config"

cat >"$WORK/pid1.sh" <<EOF
#!/bin/sh
set -e
mount --make-rprivate /
mount --bind $R $R
mount -t proc proc $R/proc
mount --bind $R/proc/sys $R/proc/sys
mount -o remount,bind,ro $R/proc/sys
mount -t sysfs -o ro sysfs $R/sys
mount -t cgroup2 cgroup2 $R/sys/fs/cgroup
mount -t tmpfs -o mode=755 tmpfs $R/dev
for n in null zero full random urandom tty; do touch $R/dev/\$n; mount --bind /dev/\$n $R/dev/\$n; done
: > $WORK/console.log; touch $R/dev/console; mount --bind $WORK/console.log $R/dev/console
mkdir -p $R/dev/pts $R/dev/shm
mount -t devpts -o newinstance,ptmxmode=0666 devpts $R/dev/pts
ln -sf pts/ptmx $R/dev/ptmx
mount -t tmpfs tmpfs $R/dev/shm
mount -t tmpfs -o mode=755 tmpfs $R/run
mount -t tmpfs tmpfs $R/tmp
exec chroot $R /usr/bin/env container=bgf-lab /lib/systemd/systemd --log-target=console
EOF
chmod +x "$WORK/pid1.sh"
mkdir -p "$CG"
say "booting systemd in new namespaces"
setsid sh -c "echo \$\$ > $CG/cgroup.procs; exec unshare --fork --pid --mount --uts --ipc --net --cgroup $WORK/pid1.sh" \
    >"$WORK/pid1.out" 2>&1 &
PID1=""
cleanup() {
    [ -n "$PID1" ] && kill -KILL "$PID1" 2>/dev/null || true
    sleep 1
    find "$CG" -depth -type d -exec rmdir {} \; 2>/dev/null || true
}
trap cleanup EXIT
i=0
while [ -z "$PID1" ] && [ $i -lt 100 ]; do
    PID1=$(pgrep -f "^/lib/systemd/systemd --log-target=console" | head -1 || true)
    i=$((i + 1)); sleep 0.1
done
[ -n "$PID1" ] || fail "systemd did not start ($WORK/pid1.out)"
IN="nsenter -t $PID1 -m -u -i -n -p -C -r -w"
i=0
until [ "$($IN systemctl is-system-running 2>/dev/null || true)" = running ]; do
    i=$((i + 1)); [ $i -lt 300 ] || { $IN systemctl --no-pager --failed || true; fail "system not running"; }
    sleep 0.1
done
i=0
until $IN journalctl -u bgf-standby -o cat 2>/dev/null | grep -q "active bgf1 heard: protected"; do
    i=$((i + 1)); [ $i -lt 300 ] || fail "the standby never protected bgf1"
    sleep 0.1
done
say "units running:"
for u in bgf-statelog bgf-active@bgf1 bgf-standby; do
    pid=$($IN systemctl show -p MainPID --value $u)
    st=$($IN cat /proc/$pid/status)
    user=$(echo "$st" | awk '/^Uid:/ { print $2 }')
    caps=$(echo "$st" | awk '/^CapEff:/ { print $2 }')
    nnp=$(echo "$st" | awk '/^NoNewPrivs:/ { print $2 }')
    sec=$(echo "$st" | awk '/^Seccomp:/ { print $2 }')
    say "  $u: uid $user CapEff $caps NoNewPrivs $nnp Seccomp $sec"
    [ "$user" = "$($IN id -u bgf)" ] || fail "$u does not run as bgf"
    [ "$nnp" = 1 ] && [ "$sec" = 2 ] || fail "$u: no_new_privs / seccomp missing"
    case $u in
        bgf-statelog) [ "$caps" = 0000000000000000 ] || fail "$u has capabilities $caps" ;;
        bgf-active@bgf1) [ "$caps" = 0000000000801000 ] || fail "$u CapEff $caps, want net_admin+sys_nice" ;;
        bgf-standby) [ "$caps" = 0000000000803000 ] || fail "$u CapEff $caps, want net_admin+net_raw+sys_nice" ;;
    esac
done

say "drill: SIGSTOP bgf-active@bgf1"
$IN systemctl kill -s SIGSTOP bgf-active@bgf1
i=0
until $IN journalctl -u bgf-standby -o cat | grep -q "takeover complete: bgf1 taken over"; do
    i=$((i + 1)); [ $i -lt 300 ] || fail "no takeover"
    sleep 0.1
done
$IN ip -br addr show dev acc1 | grep -q 198.18.10.11/32 || fail "standby lacks the access address"
$IN ip -br addr show dev cor1 | grep -q 198.18.20.11/32 || fail "standby lacks the core address"
$IN journalctl -u bgf-standby -o cat | grep "takeover complete: bgf1" | sed 's/^.*takeover complete/  takeover complete/' | cut -c1-160 >&2
say "drill: SIGCONT bgf-active@bgf1"
$IN systemctl kill -s SIGCONT bgf-active@bgf1
i=0
until [ "$($IN systemctl show -p ActiveState --value bgf-active@bgf1)" = failed ]; do
    i=$((i + 1)); [ $i -lt 300 ] || fail "the fenced active did not stop"
    sleep 0.1
done
sleep 3 # RestartSec=2: a restart would have happened by now
status=$($IN systemctl show -p ExecMainStatus --value bgf-active@bgf1)
restarts=$($IN systemctl show -p NRestarts --value bgf-active@bgf1)
state=$($IN systemctl show -p ActiveState --value bgf-active@bgf1)
say "  bgf-active@bgf1: $state, exit status $status, restarts $restarts"
[ "$status" = 3 ] && [ "$restarts" = 0 ] && [ "$state" = failed ] || fail "exit 3 without restart expected"
$IN ip -n actns -br addr show dev acc0 | grep -q 198.18.10.11 && fail "the fenced active kept its access address"
say "PASSED: units run under systemd with their capabilities; takeover and fencing work through them"
