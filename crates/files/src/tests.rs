use std::os::unix::fs::symlink;

use super::*;

const SMALL: Limit = Limit::new(8, "a test file");

fn dir() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

#[test]
fn reads_up_to_the_limit_and_refuses_one_byte_more() {
    let d = dir();
    let path = d.path().join("f");
    std::fs::write(&path, b"12345678").expect("write");
    assert_eq!(read(&path, SMALL).expect("at the limit"), b"12345678");
    std::fs::write(&path, b"123456789").expect("write");
    let e = read(&path, SMALL).expect_err("over the limit");
    assert!(matches!(e, ReadError::TooLarge { limit, .. } if limit == SMALL), "{e:?}");
    assert_eq!(
        e.to_string(),
        format!("{} is larger than 8 bytes, more than a test file can be: refusing to read it", path.display())
    );
    std::fs::write(&path, b"").expect("write");
    assert_eq!(read(&path, SMALL).expect("empty"), b"");
}

#[test]
fn files_that_claim_no_size_are_still_capped() {
    // /proc files are regular files of size 0 with contents.
    let maps = Path::new("/proc/self/maps");
    assert_eq!(std::fs::metadata(maps).expect("stat").len(), 0);
    let e = read(maps, SMALL).expect_err("maps is longer than 8 bytes");
    assert!(matches!(e, ReadError::TooLarge { .. }), "{e:?}");
    let all = read(maps, Limit::new(64 << 20, "a maps file")).expect("reads");
    assert!(all.len() > 8);
}

#[test]
fn devices_fifos_sockets_and_directories_are_refused_by_kind() {
    let d = dir();
    let socket = d.path().join("socket");
    let _listener = std::os::unix::net::UnixListener::bind(&socket).expect("bind");
    // A FIFO with no writer: open(2) without O_NONBLOCK would wait forever.
    let mut cases: Vec<(PathBuf, &str)> = testing::hostile_files(d.path(), "boot.json").into();
    cases.push((socket, "is a socket, not a regular file"));
    for (path, says) in cases {
        let e = read(&path, SMALL).expect_err("refused");
        assert!(matches!(&e, ReadError::NotRegular { .. }), "{}: {e:?}", path.display());
        assert!(e.to_string().contains(says), "{e}");
        assert!(open_regular(&path).is_err());
        assert!(read_optional(&path, SMALL).is_err(), "only absence is None");
    }
}

#[test]
fn absence_is_none_only_for_read_optional() {
    let d = dir();
    let missing = d.path().join("missing");
    assert!(read_optional(&missing, SMALL).expect("absent is fine").is_none());
    let dangling = d.path().join("dangling");
    symlink("/nonexistent/store/path", &dangling).expect("link");
    assert!(read_optional(&dangling, SMALL).expect("a dangling link is absent").is_none());
    let e = read(&missing, SMALL).expect_err("read wants the file");
    assert!(e.is_not_found() && e.path() == missing, "{e:?}");
}

#[test]
fn links_to_regular_files_are_followed() {
    let d = dir();
    std::fs::write(d.path().join("target"), b"systemd 2").expect("write");
    symlink(d.path().join("target"), d.path().join("link")).expect("link");
    assert_eq!(read(&d.path().join("link"), SMALL.clone_with(16)).expect("follows"), b"systemd 2");
}

#[test]
fn sizes_are_named_in_their_unit() {
    assert_eq!(human_size(4096), "4 KiB");
    assert_eq!(human_size(1 << 20), "1 MiB");
    assert_eq!(human_size(64 << 20), "64 MiB");
    assert_eq!(human_size(4 << 30), "4 GiB");
    assert_eq!(human_size(1000), "1000 bytes");
    assert_eq!(human_size(1025), "1025 bytes");
    assert_eq!(lossy_text(vec![b'a', 0xff, b'b']), "a\u{fffd}b");
}

impl Limit {
    fn clone_with(self, bytes: u64) -> Limit {
        Limit { bytes, ..self }
    }
}
