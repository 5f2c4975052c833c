#!/bin/sh
# Render the mounted WebDAV server block with this container's port and token, then run
# nginx in the foreground. Only the three named variables are replaced: nginx's own
# ($http_authorization) stay as they are.
set -eu
TEMPLATE=/etc/gaia/webdav.conf.template
: "${HTTP_TOKEN:?HTTP_TOKEN must name the bearer token}"
[ -r "$TEMPLATE" ] || { echo "mount integration/servers/nginx-webdav.conf at $TEMPLATE" >&2; exit 1; }
export HTTP_PORT HTTP_ROOT HTTP_TOKEN
envsubst '${HTTP_PORT} ${HTTP_ROOT} ${HTTP_TOKEN}' <"$TEMPLATE" >/etc/nginx/conf.d/webdav.conf
exec nginx -g 'daemon off;'
