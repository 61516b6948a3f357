//! `lsvdctl zns info DEV [--json]`: a host-managed zoned drive's geometry,
//! limits and zone conditions (read-only; works while an image uses it).

use anyhow::Context;

use crate::cli::ZnsCmd;
use crate::output::{key_values, print, print_json, size_both};

use super::EXIT_OK;

pub(crate) fn run(cmd: ZnsCmd) -> anyhow::Result<u8> {
    match cmd {
        ZnsCmd::Info { device, json } => {
            let info = lsvd_zns::zns_info(&device)
                .with_context(|| format!("zns info {}", device.display()))?;
            if json {
                print_json(&serde_json::to_value(&info).context("encode zns info")?);
                return Ok(EXIT_OK);
            }
            let c = &info.conditions;
            let lim = |n: u32| {
                if n == 0 {
                    "no limit".to_string()
                } else {
                    n.to_string()
                }
            };
            let opt = |s: &Option<String>| s.clone().unwrap_or_else(|| "-".into());
            let zoned = serde_json::to_value(info.zoned)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            print(&key_values(&[
                ("device", format!("{} ({})", info.device, info.name)),
                ("zoned", zoned),
                ("model", opt(&info.model)),
                ("serial", opt(&info.serial)),
                ("zone size", size_both(info.zone_size)),
                (
                    "zone capacity",
                    info.zone_capacity
                        .map(size_both)
                        .unwrap_or_else(|| "-".into()),
                ),
                ("zones", info.nr_zones.to_string()),
                ("conventional zones", info.conventional.to_string()),
                ("max open zones", lim(info.max_open_zones)),
                ("max active zones", lim(info.max_active_zones)),
                ("zone append max", size_both(info.zone_append_max_bytes)),
                ("logical block size", info.logical_block_size.to_string()),
                ("physical block size", info.physical_block_size.to_string()),
                ("write cache", opt(&info.write_cache)),
                (
                    "zones by condition",
                    format!(
                        "empty {}, implicit open {}, explicit open {}, closed {}, full {}, \
                         read-only {}, offline {}, not-wp {}",
                        c.empty,
                        c.implicit_open,
                        c.explicit_open,
                        c.closed,
                        c.full,
                        c.read_only,
                        c.offline,
                        c.not_wp
                    ),
                ),
            ]));
            Ok(EXIT_OK)
        }
    }
}
