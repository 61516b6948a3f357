//! `lsvdctl export|unexport`: ask the `lsvd` daemon (over its control
//! socket) to serve an image over NBD, to stop, or to list its exports.

use std::path::Path;

use anyhow::{anyhow, bail};
use log_engine::size::format_size;

use super::EXIT_OK;
use crate::cli::{ExportArgs, ExportSub};
use crate::daemon::control::{call, ExportInfo, Op, Response};
use crate::output::{print, print_json, Table};

fn check(resp: Response) -> anyhow::Result<Vec<ExportInfo>> {
    if !resp.ok {
        bail!(
            "{}",
            resp.error
                .unwrap_or_else(|| "the daemon refused without saying why".into())
        );
    }
    Ok(resp.exports.unwrap_or_default())
}

/// `lsvdctl export NAME ...` and `lsvdctl export ls`.
pub(crate) fn export(a: ExportArgs) -> anyhow::Result<u8> {
    if let Some(ExportSub::Ls { json, control }) = a.sub {
        return ls(&control.control, json);
    }
    let name = a
        .name
        .ok_or_else(|| anyhow!("name the image to export (or `export ls`)"))?;
    let op = Op::Export {
        name,
        unix: a.unix.map(|p| p.display().to_string()),
        tcp: a.tcp,
        read_only: a.read_only,
        accept_cache_loss: a.accept_cache_loss,
    };
    for e in check(call(&a.control.control, op)?)? {
        print(&format!("{}\t{}\n", e.name, e.uri));
    }
    Ok(EXIT_OK)
}

/// `lsvdctl unexport NAME`.
pub(crate) fn unexport(name: &str, control: &Path) -> anyhow::Result<u8> {
    check(call(
        control,
        Op::Unexport {
            name: name.to_string(),
        },
    )?)?;
    Ok(EXIT_OK)
}

fn ls(control: &Path, json: bool) -> anyhow::Result<u8> {
    let exports = check(call(control, Op::List)?)?;
    if json {
        print_json(&serde_json::to_value(&exports)?);
        return Ok(EXIT_OK);
    }
    let mut t = Table::new(&["NAME", "SIZE", "MODE", "CONNS", "URI"]);
    for e in exports {
        t.row(vec![
            e.name,
            format_size(e.size),
            if e.read_only { "ro" } else { "rw" }.to_string(),
            e.connections.to_string(),
            e.uri,
        ]);
    }
    print(&t.render());
    Ok(EXIT_OK)
}
