# fleetgate facts, format 1: POSIX sh, read-only, one round trip, no agent.
# Every line of output is a record: a tag, then tab-separated fields.
# Anything missing is skipped (or reported with a `missing` record);
# the script never fails on purpose and always ends with an `end` record.
export LC_ALL=C
PATH=/run/current-system/sw/bin:/run/wrappers/bin:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin:$PATH
export PATH

have() { command -v "$1" >/dev/null 2>&1; }
# Tabs and newlines inside values would break records: flatten them (with
# tr when there is one; values are printed raw otherwise).
if have tr; then clean() { printf '%s' "$1" | tr '\t\n\r' '   '; }; else clean() { printf '%s' "$1"; }; fi
o() {
  printf '%s' "$1"; shift
  for a in "$@"; do
    printf '\t%s' "$(clean "$a")"
  done
  printf '\n'
}
first_line() { [ -r "$1" ] && { IFS= read -r l < "$1" || [ -n "$l" ]; } && printf '%s' "$l"; }
link_base() { t=$(readlink "$1" 2>/dev/null) && printf '%s' "${t##*/}"; }

o version 1
for t in readlink sed df tail tr blkid; do have "$t" || o missing-tool "$t"; done
o hostname "$(uname -n 2>/dev/null)"
o kernel "$(uname -r 2>/dev/null)"
if [ -r /proc/sys/kernel/random/boot_id ]; then o boot-id "$(first_line /proc/sys/kernel/random/boot_id)"; else o missing-file /proc/sys/kernel/random/boot_id; fi

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
  root_sys=$(readlink -f "/sys/dev/block/$root_mm")
fi
if [ -z "$root_sys" ]; then
  case "$root_src" in
    /dev/*)
      n=$(readlink -f "$root_src" 2>/dev/null); n=${n##*/}
      [ -n "$n" ] && [ -e "/sys/class/block/$n" ] && root_sys=$(readlink -f "/sys/class/block/$n") ;;
  esac
fi
o root "$root_mm" "$root_fs" "$root_src" "$root_sys"

# Every ancestor of the root device, following NVMe multipath (a namespace
# under virtual/nvme-subsystem → its controllers) and stacked devices
# (slaves/ of dm, md).
dev_record() {
  d=$1
  [ -e "$d/uevent" ] || [ -L "$d/subsystem" ] || return 0
  devname=
  if [ -r "$d/uevent" ]; then devname=$(sed -n 's/^DEVNAME=//p' "$d/uevent" 2>/dev/null); fi
  o device "$d" "$(link_base "$d/subsystem")" "$(link_base "$d/driver")" "$(link_base "$d/driver/module")" "$(first_line "$d/modalias")" "$devname"
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
    if [ "$(link_base "$d/subsystem")" = nvme-subsystem ]; then
      for c in "$d"/nvme[0-9]*; do
        [ -L "$c" ] && pending="$pending $(readlink -f "$c")"
      done
    fi
    if [ -d "$d/slaves" ]; then
      for s in "$d"/slaves/*; do
        [ -e "$s" ] && pending="$pending $(readlink -f "$s")"
      done
    fi
    d=${d%/*}
  done
done

# Block devices and their persistent names.
for b in /sys/class/block/*; do
  [ -e "$b" ] || continue
  o block "${b##*/}" "$(first_line "$b/dev")" "$(readlink -f "$b")"
done
if [ -d /dev/disk ]; then
  for dir in /dev/disk/by-*; do
    [ -d "$dir" ] || continue
    for l in "$dir"/*; do
      [ -L "$l" ] || continue
      o link "${dir##*/}" "${l##*/}" "$(readlink -f "$l")"
    done
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
  p=/run/$s-system
  [ -e "$p" ] || continue
  o system "$s" "$(readlink -f "$p")"
  for c in kernel initrd kernel-modules firmware systemd; do
    [ -e "$p/$c" ] || [ -L "$p/$c" ] && o system-link "$s" "$c" "$(readlink -f "$p/$c" 2>/dev/null || readlink "$p/$c")"
  done
  for f in kernel-params init-interface-version nixos-version system switch-inhibitors boot.json; do
    [ -f "$p/$f" ] || continue
    o system-file "$s" "$f"
    while IFS= read -r l || [ -n "$l" ]; do o system-line "$s" "$f" "$l"; done < "$p/$f"
    # Files are compared byte for byte: say whether the last line ends in a newline.
    [ -s "$p/$f" ] && [ -z "$(tail -c 1 "$p/$f" 2>/dev/null)" ] && o system-eol "$s" "$f"
  done
done
for l in /nix/var/nix/profiles/system-*-link; do
  [ -L "$l" ] || continue
  n=${l##*/system-}; n=${n%-link}
  o generation "$n" "$(readlink -f "$l")"
done
[ -L /nix/var/nix/profiles/system ] && o profile "$(readlink /nix/var/nix/profiles/system)" "$(readlink -f /nix/var/nix/profiles/system)"

# Boot loader and firmware.
if [ -d /sys/firmware/efi ]; then o firmware uefi; else o firmware bios; fi
for m in /boot /efi /boot/efi; do
  [ -d "$m/loader" ] || continue
  o sdboot "$m"
  for e in "$m"/loader/entries/*.conf; do
    [ -f "$e" ] || continue
    o sdboot-entry "${e##*/}" "$(sed -n 's/^title[[:space:]]*//p' "$e" | head -n 1)"
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
  [ -f "$e" ] && sed -n '/^[^#]/p' "$e" | while IFS= read -r l; do o grubenv "$l"; done
done

# Resources.
if have df; then
  d=/nix; [ -d "$d" ] || d=/
  df -Pk "$d" 2>/dev/null | sed -n 2p | { read -r fs size used avail rest && o nix-free-kib "$d" "$avail"; }
fi
if [ -r /proc/meminfo ]; then
  while IFS=' ' read -r k v unit; do
    case "$k" in MemTotal:|MemAvailable:) o mem "${k%:}" "$v" ;; esac
  done < /proc/meminfo
fi
o end
exit 0
