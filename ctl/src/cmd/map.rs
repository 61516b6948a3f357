//! `lsvdctl map|unmap|device ls`: ask the `lsvd` daemon to serve an image as
//! a ublk block device, to remove one, or to list them.

use std::path::Path;

use anyhow::bail;
use log_engine::size::format_size;

use super::EXIT_OK;
use crate::daemon::control::{call, DeviceInfo, Op, Response};
use crate::output::{print, print_json, Table};

fn devices(resp: Response) -> anyhow::Result<Vec<DeviceInfo>> {
    if !resp.ok {
        bail!(
            "{}",
            resp.error
                .unwrap_or_else(|| "the daemon refused without saying why".into())
        );
    }
    Ok(resp.devices.unwrap_or_default())
}

/// `lsvdctl map NAME`: prints the device path.
pub(crate) fn map(
    name: &str,
    queues: Option<u16>,
    depth: Option<u16>,
    accept_cache_loss: bool,
    control: &Path,
) -> anyhow::Result<u8> {
    let op = Op::Map {
        name: name.to_string(),
        queues,
        depth,
        accept_cache_loss,
    };
    for d in devices(call(control, op)?)? {
        print(&format!("{}\n", d.path));
    }
    Ok(EXIT_OK)
}

/// `lsvdctl unmap DEV|NAME`.
pub(crate) fn unmap(target: &str, control: &Path) -> anyhow::Result<u8> {
    let op = Op::Unmap {
        target: target.to_string(),
    };
    for d in devices(call(control, op)?)? {
        print(&format!("unmapped {} ({})\n", d.path, d.name));
    }
    Ok(EXIT_OK)
}

/// `lsvdctl device ls [--json]`.
pub(crate) fn ls(json: bool, control: &Path) -> anyhow::Result<u8> {
    let devs = devices(call(control, Op::Devices)?)?;
    if json {
        print_json(&serde_json::to_value(&devs)?);
        return Ok(EXIT_OK);
    }
    let mut t = Table::new(&["NAME", "DEVICE", "SIZE", "MODE"]);
    for d in devs {
        t.row(vec![
            d.name,
            d.path,
            format_size(d.size),
            if d.journaled {
                "journal"
            } else {
                "write-through"
            }
            .to_string(),
        ]);
    }
    print(&t.render());
    Ok(EXIT_OK)
}

/// `lsvdctl recover`.
pub(crate) fn recover(control: &Path) -> anyhow::Result<u8> {
    let devs = devices(call(control, Op::Recover)?)?;
    if devs.is_empty() {
        print("no device to recover\n");
    }
    for d in devs {
        print(&format!("recovered {} ({})\n", d.path, d.name));
    }
    Ok(EXIT_OK)
}
