//! `lsvdctl`: see `lsvdctl --help` and the crate docs of `lsvd_ctl`.

fn main() -> std::process::ExitCode {
    lsvd_ctl::cmd::main()
}
