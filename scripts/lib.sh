# Shared by scripts/dev.sh, scripts/llm.sh and scripts/compose.sh, which source it after setting LOG_TAG (the
# prefix of their messages).

log() { printf '[%s] %s\n' "${LOG_TAG:-dev}" "$*" >&2; }
die() { log "error: $*"; exit 1; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
now() { date +%s; }

# Installs the Debian packages that are not installed yet (one apt-get update, only when something is missing).
apt_install() {
  local missing=() pkg
  for pkg in "$@"; do dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing Debian packages: ${missing[*]}"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}
