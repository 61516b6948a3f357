//! Who is calling, and may they read an image.
//!
//! The peer of a Unix socket is identified by `SO_PEERCRED` at accept (uid, gid, pid);
//! supplementary groups are read from `/proc/<pid>/status` at the same moment (best
//! effort: none if it cannot be read).
//!
//! Access rule (same as opening the image): a peer may use an image when it could open the
//! image's store path for reading: root always; otherwise every ancestor directory must
//! grant search (x) and the path itself read (r, plus x for a directory) through the
//! owner, group or other bits that apply to the peer (the first class that matches
//! decides, as in the kernel). ACLs and capabilities other than root's are not consulted.

use std::io;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::path::Path;

/// Credentials of a connected peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// Process id at connect time.
    pub pid: i32,
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Supplementary groups (may be empty when unknown).
    pub groups: Vec<u32>,
}

impl Peer {
    /// True for uid 0.
    pub fn is_root(&self) -> bool {
        self.uid == 0
    }

    /// A peer with just a uid and gid (tests, in-process callers).
    pub fn new(uid: u32, gid: u32) -> Peer {
        Peer {
            pid: 0,
            uid,
            gid,
            groups: Vec::new(),
        }
    }

    fn in_group(&self, gid: u32) -> bool {
        self.gid == gid || self.groups.contains(&gid)
    }
}

/// Reads `SO_PEERCRED` of `s` and the peer's supplementary groups.
pub fn peer_of(s: &UnixStream) -> io::Result<Peer> {
    use std::os::fd::AsRawFd;
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: cred and len are valid for writes of the sizes given; the fd is open.
    let rc = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(Peer {
        pid: cred.pid,
        uid: cred.uid,
        gid: cred.gid,
        groups: proc_groups(cred.pid),
    })
}

/// Supplementary groups of `pid` from `/proc/<pid>/status` (empty if unreadable).
fn proc_groups(pid: i32) -> Vec<u32> {
    let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return Vec::new();
    };
    s.lines()
        .find_map(|l| l.strip_prefix("Groups:"))
        .map(|g| {
            g.split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Whether `peer` has all of `want` (bits of 0o7: r=4, w=2, x=1) on a file of this
/// metadata.
fn allowed(md: &std::fs::Metadata, peer: &Peer, want: u32) -> bool {
    let mode = md.mode();
    let bits = if md.uid() == peer.uid {
        (mode >> 6) & 7
    } else if peer.in_group(md.gid()) {
        (mode >> 3) & 7
    } else {
        mode & 7
    };
    bits & want == want
}

/// Whether `peer` may open `path` for reading (see the module doc). Errors only when
/// `path` cannot be examined at all (missing, I/O error).
pub fn may_read(path: &Path, peer: &Peer) -> io::Result<bool> {
    let md = std::fs::metadata(path)?;
    if peer.is_root() {
        return Ok(true);
    }
    let abs = std::fs::canonicalize(path)?;
    for dir in abs.ancestors().skip(1) {
        if !allowed(&std::fs::metadata(dir)?, peer, 1) {
            return Ok(false);
        }
    }
    let want = if md.is_dir() { 4 | 1 } else { 4 };
    Ok(allowed(&md, peer, want))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn mode_bits_decide() {
        let d = tempfile::tempdir().unwrap();
        std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let store = d.path().join("store");
        std::fs::create_dir(&store).unwrap();
        let nobody = Peer::new(65534, 65534);
        std::fs::set_permissions(&store, std::fs::Permissions::from_mode(0o700)).unwrap();
        let owner_uid = std::fs::metadata(&store).unwrap().uid();
        assert!(may_read(&store, &Peer::new(owner_uid, 12345)).unwrap());
        if owner_uid != 65534 {
            assert!(!may_read(&store, &nobody).unwrap());
            std::fs::set_permissions(&store, std::fs::Permissions::from_mode(0o705)).unwrap();
            assert!(may_read(&store, &nobody).unwrap());
            // A closed parent stops traversal.
            std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
            assert!(!may_read(&store, &nobody).unwrap());
        }
        assert!(may_read(&store, &Peer::new(0, 0)).unwrap());
        assert!(may_read(&d.path().join("missing"), &nobody).is_err());
    }
}
