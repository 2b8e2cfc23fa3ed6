# Shared by /init, the DHCP hook and the supervisors (busybox sh). Sourced, never run.
# Debian's busybox shell runs its own applet for any name it knows, whatever PATH says: the real
# programs that have a namesake applet (ip, modprobe, rdate) are called by their full path.

BMA_RUN=/run/bm-agent
BMA_NET=$BMA_RUN/net

# Seconds since boot with hundredths, as the kernel's own log shows them: boot phases can then be
# read against the kernel's lines on the same console.
uptime_s() {
  read -r up _ </proc/uptime
  printf '%s' "$up"
}

# One line on the console and in /run/bm-agent/init.log (kept for the debug shell and SSH). Shell
# builtins only: a command substitution forks, about 4 ms each under QEMU without KVM, and the
# init logs a line at every step.
log() {
  read -r up _ </proc/uptime
  while [ ${#up} -lt 9 ]; do up=" $up"; done
  line="[$up] bm-agent-init: $*"
  printf '%s\n' "$line" >/dev/console
  [ -d "$BMA_RUN" ] && printf '%s\n' "$line" >>"$BMA_RUN/init.log"
  return 0
}

# Every argument of the kernel command line, one a line, split the way the kernel and the agent
# split it: double quotes may hold spaces (key="a b") and are removed.
cmdline_args() {
  if [ ! -s "$BMA_RUN/cmdline.args" ]; then
    mkdir -p "$BMA_RUN"
    awk '{
      n = length($0); cur = ""; q = 0; st = 0
      for (i = 1; i <= n; i++) {
        c = substr($0, i, 1)
        if (c == "\"") { q = !q; st = 1 }
        else if (!q && (c == " " || c == "\t")) { if (st) print cur; cur = ""; st = 0 }
        else { cur = cur c; st = 1 }
      }
      if (st) print cur
    }' /proc/cmdline >"$BMA_RUN/cmdline.args"
  fi
  cat "$BMA_RUN/cmdline.args"
}

# The value of the last NAME=VALUE on the kernel command line (a later argument wins, as in the
# agent); fails when NAME is absent or empty. One awk, reading the split arguments' file itself.
arg() {
  [ -s "$BMA_RUN/cmdline.args" ] || cmdline_args >/dev/null
  awk -v key="$1=" '
    index($0, key) == 1 { v = substr($0, length(key) + 1); found = 1 }
    END { if (!found || v == "") exit 1; printf "%s", v }' "$BMA_RUN/cmdline.args"
}

# A link up with busybox's ip: iproute2's costs about 50 ms a call under QEMU without KVM (most of
# it loading its shared libraries), busybox's a tenth of that, and for this the two are the same.
# Addresses and routes are left to iproute2's (`addr replace`, which busybox's lacks).
link_up() {
  busybox ip link set "$1" up
}

# NAME=1/true/yes/on, the spellings the agent accepts for its own boolean arguments.
arg_true() {
  case "$(arg "$1")" in
    1 | true | yes | on | TRUE | True | YES | Yes | ON | On) return 0 ;;
  esac
  return 1
}

# %XX decoding for arguments that cannot hold spaces unquoted (an SSH public key). A literal '+'
# stays a '+': base64 uses it, and busybox's decoder would otherwise make it a space.
urldecode() {
  httpd -d "$(printf '%s' "$1" | sed 's/+/%2B/g')"
}
