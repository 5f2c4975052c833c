#!/bin/sh
# Configure sshd from the environment and run it in the foreground on 127.0.0.1:SSH_PORT.
#   SSH_AUTHORIZED_KEYS  public keys that may log in as gaia (one a line)
#   SSH_HOST_KEY         the private ed25519 host key; a new one is made when it is empty
# Public-key logins only, SFTP by internal-sftp: what the SSH backend needs, nothing more.
set -eu
: "${SSH_AUTHORIZED_KEYS:?SSH_AUTHORIZED_KEYS must hold the public keys that may log in}"
umask 077
printf '%s\n' "$SSH_AUTHORIZED_KEYS" >/home/gaia/.ssh/authorized_keys
chown gaia:gaia /home/gaia/.ssh/authorized_keys
HOST_KEY=/etc/ssh/ssh_host_ed25519_key
if [ -n "${SSH_HOST_KEY:-}" ]; then
    printf '%s\n' "$SSH_HOST_KEY" >"$HOST_KEY"
elif [ ! -s "$HOST_KEY" ]; then
    ssh-keygen -q -t ed25519 -N '' -f "$HOST_KEY"
fi
cat >/etc/ssh/gaia_sshd_config <<CONFIG
Port $SSH_PORT
ListenAddress 127.0.0.1
HostKey $HOST_KEY
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
PermitRootLogin no
AllowUsers gaia
UsePAM no
UseDNS no
Subsystem sftp internal-sftp
CONFIG
exec /usr/sbin/sshd -D -e -f /etc/ssh/gaia_sshd_config
