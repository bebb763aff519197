//! Deterministic fuzzing of the bounded readers and the parsers behind them:
//! mutated system files, module metadata and facts documents, all read and
//! checked to the end. Nothing may panic, and a bounded read returns the
//! file or says it is too large. The same harness,
//! `fleetgate_check::fuzzing::read_system_files`, runs under cargo-fuzz in
//! `fuzz/fuzz_targets/system_files.rs`. Fixed seeds, so a failure reproduces.

use fastrand::Rng;
use fleetgate_check::fuzzing::read_system_files;

/// A plausible system: each part is the file of `fuzzing::FILES`, in order.
fn seed() -> Vec<u8> {
    let facts = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../facts/tests/fixtures/virtio-vm.facts.json"))
        .expect("the virtio VM's facts");
    let parts: [&[u8]; 14] = [
        b"a file the bounded read reads",
        br#"{"org.nixos.bootspec.v1":{"init":"/x/init","initrd":"/x/initrd","kernel":"/x/kernel","kernelParams":["root=fstab"],"label":"NixOS","system":"x86_64-linux","toplevel":"/x"},"org.nixos.specialisation.v1":{}}"#,
        b"root=fstab loglevel=4",
        b"25.05",
        b"systemd 2",
        br#"{"dbus-implementation":"broker"}"#,
        b"/dev/vda / ext4 defaults 0 1\nLABEL=boot /boot vfat umask=0077 0 2\n",
        b"MZ not really a kernel HdrS",
        b"kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio.ko\nkernel/drivers/virtio/virtio.ko:\nkernel/fs/ext4/ext4.ko:\n",
        b"alias virtio:d00000002v* virtio_blk\nalias fs-ext4 ext4\nalias pci:v00001AF4d*sv*sd*bc*sc*i* virtio_pci\n",
        b"softdep ext4 pre: crc32c\n",
        b"kernel/drivers/virtio/virtio_pci.ko\n",
        b"virtio_pci.alias=pci:v00001AF4d*sv*sd*bc*sc*i*\0ext4.alias=fs-ext4\0",
        &facts,
    ];
    let mut data = vec![16u8];
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            data.push(0xFF);
        }
        data.extend_from_slice(part);
    }
    data
}

/// Words the parsers care about.
const TOKENS: [&[u8]; 8] = [b"\0", b"{", b"\"", b"/dev/zero", b"alias ", b":", b"\n", b"HdrS"];

/// Mutates whole files of the seed: one is cut short, emptied, filled with
/// noise, given a token, or swapped with another; a byte of one flips.
fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let (limit, rest) = seed.split_first().map_or((0, &[][..]), |(l, r)| (*l, r));
    let mut files: Vec<Vec<u8>> = rest.split(|&b| b == 0xFF).map(<[u8]>::to_vec).collect();
    for _ in 0..rng.usize(1..=3) {
        let i = rng.usize(..files.len());
        let file = &mut files[i];
        match rng.usize(..6) {
            0 => file.truncate(rng.usize(..=file.len())),
            1 => file.clear(),
            2 => {
                let len = rng.usize(..64);
                *file = std::iter::repeat_with(|| rng.u8(..0xFF)).take(len).collect();
            }
            3 => {
                let token = TOKENS[rng.usize(..TOKENS.len())];
                let at = rng.usize(..=file.len());
                file.splice(at..at, token.iter().copied());
            }
            4 if !file.is_empty() => {
                let at = rng.usize(..file.len());
                file[at] ^= 1 << rng.u32(..7);
            }
            _ => {
                let j = rng.usize(..files.len());
                files.swap(i, j);
            }
        }
    }
    let mut data = vec![limit.wrapping_add(rng.u8(..4))];
    data.extend(files.join(&0xFF));
    data
}

#[test]
fn mutated_system_files_are_read_bounded_and_never_panic() {
    let seed = seed();
    read_system_files(&seed);
    read_system_files(&[]);
    read_system_files(&[0]);
    let mut rng = Rng::with_seed(0x5eed_f11e);
    for _ in 0..300 {
        read_system_files(&mutate(&mut rng, &seed));
    }
}
