# fleetgate facts, format 1: POSIX sh, read-only, one round trip, no agent.
# Every line of output is a record: a tag, then tab-separated fields.
# Anything missing is skipped (or reported with a `missing` record);
# the script never fails on purpose and always ends with an `end` record.
#
# Cost: a fork and exec cost a millisecond or more on a small VPS, so the
# script uses builtins wherever it can: records are printed with printf,
# files are read with `read`, a symbolic link to a directory is resolved
# with `cd -P` (its physical path, what `readlink -f` prints), and the
# other links are resolved in one `readlink -m` for all of them. A whole run
# forks a handful of processes (readlink, df, blkid), whatever the number of
# records.
export LC_ALL=C
PATH=/run/current-system/sw/bin:/run/wrappers/bin:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin:$PATH
export PATH
unset CDPATH

have() { command -v "$1" >/dev/null 2>&1; }
eval "$(printf "tab='\t' cr='\r'")"
nl='
'
# Tabs and newlines inside values would break records: they become spaces
# (only values that hold one take this slow path).
flat() {
  _v=$1; r=
  while [ -n "$_v" ]; do
    _c=${_v%"${_v#?}"}; _v=${_v#?}
    case "$_c" in "$tab"|"$nl"|"$cr") _c=' ' ;; esac
    r=$r$_c
  done
}
o() {
  rec=$1; shift
  for a in "$@"; do
    case "$a" in *"$tab"*|*"$nl"*|*"$cr"*) flat "$a"; a=$r ;; esac
    rec="$rec$tab$a"
  done
  printf '%s\n' "$rec"
}
# The first line of a file in $l (empty when it cannot be read).
line() { l=; [ -r "$1" ] && { IFS= read -r l < "$1" || :; }; }
# The physical path of a directory (through symbolic links) in $p: what
# `readlink -f` prints, without a process. It changes the working
# directory, which nothing here depends on.
physhere() { p=; [ -d "$1" ] && cd -P -- "$1" 2>/dev/null && p=$PWD; }
# The last path component of where a link to a directory leads, in $b.
base() { b=; physhere "$1" && b=${p##*/}; }

o version 1
for t in readlink df tail tr blkid; do have "$t" || o missing-tool "$t"; done
line /proc/sys/kernel/hostname; [ -n "$l" ] || l=$(uname -n 2>/dev/null)
o hostname "$l"
line /proc/sys/kernel/osrelease; [ -n "$l" ] || l=$(uname -r 2>/dev/null)
o kernel "$l"
if [ -r /proc/sys/kernel/random/boot_id ]; then line /proc/sys/kernel/random/boot_id; o boot-id "$l"; else o missing-file /proc/sys/kernel/random/boot_id; fi

# Mounts of interest: the last mount of each wins.
root_mm=; root_src=; root_fs=
if [ -r /proc/self/mountinfo ]; then
  while IFS=' ' read -r id parent mm mroot mp rest; do
    tail=${rest#* - }
    fstype=${tail%% *}; t2=${tail#* }; src=${t2%% *}
    case "$mp" in
      /) root_mm=$mm; root_fs=$fstype; root_src=$src ;;
    esac
    case "$mp" in
      /|/nix|/nix/store|/boot|/efi|/boot/efi) o mount "$mp" "$mm" "$fstype" "$src" ;;
    esac
  done < /proc/self/mountinfo
else
  o missing-file /proc/self/mountinfo
fi

# The root block device in sysfs: by device number, else by the mount source.
root_sys=
if [ -n "$root_mm" ] && [ -d "/sys/dev/block/$root_mm" ]; then
  physhere "/sys/dev/block/$root_mm"; root_sys=$p
fi
if [ -z "$root_sys" ]; then
  case "$root_src" in
    /dev/*)
      n=$(readlink -f "$root_src" 2>/dev/null); n=${n##*/}
      [ -n "$n" ] && [ -e "/sys/class/block/$n" ] && { physhere "/sys/class/block/$n"; root_sys=$p; } ;;
  esac
fi
o root "$root_mm" "$root_fs" "$root_src" "$root_sys"

# Every ancestor of the root device, following NVMe multipath (a namespace
# under virtual/nvme-subsystem → its controllers) and stacked devices
# (slaves/ of dm, md).
dev_record() {
  d=$1; subsystem=
  [ -e "$d/uevent" ] || [ -L "$d/subsystem" ] || return 0
  devname=
  if [ -r "$d/uevent" ]; then
    while IFS= read -r u || [ -n "$u" ]; do
      case "$u" in DEVNAME=*) devname=${u#DEVNAME=} ;; esac
    done < "$d/uevent"
  fi
  base "$d/subsystem"; subsystem=$b
  base "$d/driver"; driver=$b
  base "$d/driver/module"; module=$b
  line "$d/modalias"
  o device "$d" "$subsystem" "$driver" "$module" "$l" "$devname"
}
seen=' '
pending=$root_sys
while [ -n "$pending" ]; do
  set -- $pending; cur=$1; shift; pending=$*
  d=$cur
  while [ -n "$d" ] && [ "$d" != /sys/devices ] && [ "$d" != /sys ] && [ "$d" != / ]; do
    case "$seen" in *" $d "*) break ;; esac
    seen="$seen$d "
    dev_record "$d"
    if [ "$subsystem" = nvme-subsystem ]; then
      for c in "$d"/nvme[0-9]*; do
        [ -L "$c" ] && physhere "$c" && pending="$pending $p"
      done
    fi
    if [ -d "$d/slaves" ]; then
      for s in "$d"/slaves/*; do
        [ -e "$s" ] && physhere "$s" && pending="$pending $p"
      done
    fi
    d=${d%/*}
  done
done

# Block devices and their persistent names.
for b in /sys/class/block/*; do
  [ -e "$b" ] || continue
  line "$b/dev"; physhere "$b"
  o block "${b##*/}" "$l" "$p"
done

# Links resolved in one readlink: /dev/disk/by-*/* and the systems' parts.
# `readlink -m` prints one line for each argument, whatever it is.
set --
if [ -d /dev/disk ]; then
  for l in /dev/disk/by-*/*; do [ -L "$l" ] && set -- "$@" "$l"; done
fi
for s in current booted; do
  [ -e "/run/$s-system" ] || continue
  for c in kernel initrd kernel-modules firmware systemd; do
    [ -e "/run/$s-system/$c" ] || [ -L "/run/$s-system/$c" ] && set -- "$@" "/run/$s-system/$c"
  done
done
resolved=
[ $# -gt 0 ] && have readlink && resolved="$(readlink -m -- "$@" 2>/dev/null)$nl"
# The next resolved path, in $t.
next_resolved() { t=${resolved%%"$nl"*}; resolved=${resolved#*"$nl"}; }

if [ -d /dev/disk ]; then
  for l in "$@"; do
    case "$l" in /dev/disk/by-*) ;; *) break ;; esac
    next_resolved
    k=${l%/*}
    o link "${k##*/}" "${l##*/}" "$t"
    shift
  done
else
  o missing-file /dev/disk
fi
if have blkid; then
  if have timeout; then bl="timeout 10 blkid"; else bl=blkid; fi
  $bl -c /dev/null -o export 2>/dev/null | while IFS= read -r l; do o blkid "$l"; done
fi

# NixOS systems and generations.
for s in current booted; do
  sp=/run/$s-system
  [ -e "$sp" ] || continue
  physhere "$sp"
  o system "$s" "$p"
  for c in kernel initrd kernel-modules firmware systemd; do
    [ "$1" = "$sp/$c" ] || continue
    next_resolved; shift
    o system-link "$s" "$c" "$t"
  done
  for f in kernel-params init-interface-version nixos-version system switch-inhibitors boot.json; do
    [ -f "$sp/$f" ] || continue
    o system-file "$s" "$f"
    # Files are compared byte for byte: say whether the last line ends in a newline.
    eol=y
    while :; do
      if IFS= read -r l; then o system-line "$s" "$f" "$l"
      elif [ -n "$l" ]; then o system-line "$s" "$f" "$l"; eol=; break
      else break
      fi
    done < "$sp/$f"
    [ -s "$sp/$f" ] && [ -n "$eol" ] && o system-eol "$s" "$f"
  done
done
for g in /nix/var/nix/profiles/system-*-link; do
  [ -L "$g" ] || continue
  n=${g##*/system-}; n=${n%-link}
  physhere "$g"
  o generation "$n" "$p"
done
if [ -L /nix/var/nix/profiles/system ]; then
  physhere /nix/var/nix/profiles/system
  o profile "$(readlink /nix/var/nix/profiles/system)" "$p"
fi

# Boot loader and firmware.
if [ -d /sys/firmware/efi ]; then o firmware uefi; else o firmware bios; fi
for m in /boot /efi /boot/efi; do
  [ -d "$m/loader" ] || continue
  o sdboot "$m"
  for e in "$m"/loader/entries/*.conf; do
    [ -f "$e" ] || continue
    title=
    while IFS= read -r l || [ -n "$l" ]; do
      case "$l" in title*) title=${l#title}; title=${title#"${title%%[![:space:]]*}"}; break ;; esac
    done < "$e"
    o sdboot-entry "${e##*/}" "$title"
  done
  if [ -f "$m/loader/loader.conf" ]; then
    while IFS= read -r l || [ -n "$l" ]; do o sdboot-conf "$l"; done < "$m/loader/loader.conf"
  fi
done
for v in LoaderEntryOneShot LoaderEntryDefault LoaderEntrySelected; do
  f=/sys/firmware/efi/efivars/$v-4a67b082-0a4c-41cf-b6c7-440b29bb8c4f
  [ -f "$f" ] && o efivar "$v" "$(cat "$f" 2>/dev/null | tail -c +5 | tr -d '\000')"
done
# GRUB menu entries with the path grub-reboot takes: `Submenu>Entry`.
# Braces are counted per line (`{` ending a line opens, `}` starting one
# closes), which is how grub-mkconfig and NixOS write grub.cfg.
grub_entries() {
  depth=0; path=; opened=
  while IFS= read -r line || [ -n "$line" ]; do
    t=${line#"${line%%[![:space:]]*}"}
    case "$t" in
      \}*)
        depth=$((depth - 1))
        if [ -n "$opened" ] && [ "${opened##* }" = "$depth" ]; then
          opened=${opened% *}
          case "$path" in *'>'*) path=${path%'>'*} ;; *) path= ;; esac
        fi ;;
      menuentry[[:space:]]*|submenu[[:space:]]*)
        kind=${t%%[[:space:]]*}
        r=${t#"$kind"}; r=${r#"${r%%[![:space:]]*}"}
        case "$r" in
          \"*) r=${r#?}; title=${r%%\"*} ;;
          \'*) r=${r#?}; title=${r%%\'*} ;;
          *) title=${r%%[[:space:]]*} ;;
        esac
        if [ "$kind" = submenu ]; then
          opened="$opened $depth"
          path=${path:+$path>}$title
        else
          o grub-entry "${path:+$path>}$title" "$title"
        fi ;;
    esac
    case "$t" in *\{) depth=$((depth + 1)) ;; esac
  done < "$1"
}
for g in /boot/grub/grub.cfg /boot/grub2/grub.cfg; do
  [ -f "$g" ] || continue
  o grub "$g"
  grub_entries "$g"
  e=${g%/*}/grubenv
  if [ -f "$e" ]; then
    while IFS= read -r l || [ -n "$l" ]; do
      case "$l" in ''|'#'*) ;; *) o grubenv "$l" ;; esac
    done < "$e"
  fi
done

# Resources.
if have df; then
  d=/nix; [ -d "$d" ] || d=/
  df -Pk "$d" 2>/dev/null | { read -r header && read -r fs size used avail rest && o nix-free-kib "$d" "$avail"; }
fi
if [ -r /proc/meminfo ]; then
  while IFS=' ' read -r k v unit; do
    case "$k" in MemTotal:|MemAvailable:) o mem "${k%:}" "$v" ;; esac
  done < /proc/meminfo
fi
o end
exit 0
