//! SIGTERM/SIGINT as a channel message: the signals are blocked in every
//! thread and one thread takes them with `sigwait`.

use anyhow::bail;
use crossbeam_channel::Receiver;

/// Block SIGTERM and SIGINT (call before spawning other threads) and return
/// a channel that gets the signal number when one arrives.
pub fn wait_for_stop() -> anyhow::Result<Receiver<i32>> {
    // SAFETY: plain libc signal-set calls on a local, zero-initialised set.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        let rc = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        if rc != 0 {
            bail!("pthread_sigmask: {}", std::io::Error::from_raw_os_error(rc));
        }
        set
    };
    let (tx, rx) = crossbeam_channel::bounded(1);
    std::thread::Builder::new()
        .name("lsvd-signals".into())
        .spawn(move || loop {
            let mut sig: libc::c_int = 0;
            // SAFETY: `set` is a valid initialised signal set; `sig` is a
            // valid out pointer.
            let rc = unsafe { libc::sigwait(&set, &mut sig) };
            if rc == 0 {
                let _ = tx.try_send(sig);
            }
        })?;
    Ok(rx)
}
