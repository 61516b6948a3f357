//! `lsvd`: the daemon serving lsvd images over NBD; see `lsvd --help` and
//! `lsvd_ctl::daemon`.

fn main() -> std::process::ExitCode {
    lsvd_ctl::daemon::main()
}
