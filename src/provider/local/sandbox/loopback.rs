//! Bringing up the loopback interface of the sandbox's new network namespace (SIOCSIFFLAGS).

use std::io;
use std::os::fd::AsRawFd;

use nix::sys::socket::{AddressFamily, SockFlag, SockType};

// SIOCGIFFLAGS/SIOCSIFFLAGS: read and write an interface's flags through an `ifreq` (nix has
// typed ioctl macros, not these requests themselves).
nix::ioctl_readwrite_bad!(read_interface_flags, libc::SIOCGIFFLAGS, libc::ifreq);
nix::ioctl_write_ptr_bad!(write_interface_flags, libc::SIOCSIFFLAGS, libc::ifreq);

#[allow(
    unsafe_code,
    reason = "SIOCGIFFLAGS/SIOCSIFFLAGS ioctls on a libc::ifreq, which nix does not wrap"
)]
pub(super) fn set_loopback_up() -> io::Result<()> {
    let socket = nix::sys::socket::socket(AddressFamily::Inet, SockType::Datagram, SockFlag::SOCK_CLOEXEC, None)?;
    // SAFETY: ifreq is plain old data; zeroed is a valid value.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    for (slot, byte) in request.ifr_name.iter_mut().zip(b"lo\0") {
        *slot = *byte as libc::c_char;
    }
    // SAFETY: a socket we own and an ifreq naming `lo`; the kernel fills its flags.
    unsafe { read_interface_flags(socket.as_raw_fd(), &mut request) }?;
    // SAFETY: the union member SIOCGIFFLAGS just wrote.
    unsafe { request.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
    // SAFETY: the same socket and ifreq, now with IFF_UP set.
    unsafe { write_interface_flags(socket.as_raw_fd(), &request) }?;
    Ok(())
}
