//! `support-relay`: see `--help`.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use base64::Engine;
use support_relay::relay::RelayConfig;
use support_relay::serve;

const HELP: &str = "\
support-relay: the hub's only program. Forwards one tunnel's WireGuard
datagrams between its two endpoints (device and admin, both possibly behind
NAT, both may roam), drops everything else, rate-limits handshakes, and exits
when the tunnel's lifetime is over. It holds no key that can read or forge
traffic: WireGuard runs end to end between the two peers.

Usage:
  support-relay --device-key KEY --admin-key KEY --lifetime SECS [options]

Options:
  --device-key KEY            the device's WireGuard public key (base64)
  --admin-key KEY             the admin's WireGuard public key (base64)
  --lifetime SECS             exit after this many seconds (the tunnel's expiry)
  --listen ADDR               UDP address to listen on [default: 0.0.0.0:51820]
  --tunnel ID                 the tunnel this hub serves: a label for logs and
                              for finding the hub later (support-admin gc)
  --handshakes-per-source N   handshake messages per second per address [default: 20]
  --handshakes-total N        handshake messages per second overall [default: 200]
  -h, --help                  print this help
  -V, --version               print the version
";

struct Args {
    listen: SocketAddr,
    tunnel: Option<String>,
    config: RelayConfig,
    lifetime: Duration,
}

fn key(v: &str, what: &str) -> Result<[u8; 32], String> {
    let b = base64::engine::general_purpose::STANDARD
        .decode(v.trim())
        .map_err(|_| {
            format!("{what} is not base64 (a WireGuard public key looks like `wg pubkey` output)")
        })?;
    b.try_into()
        .map_err(|_| format!("{what} must decode to 32 bytes"))
}

fn parse(mut it: impl Iterator<Item = String>) -> Result<Option<Args>, String> {
    let mut listen: SocketAddr = SocketAddr::from(([0, 0, 0, 0], 51820));
    let (mut device, mut admin, mut lifetime) = (None, None, None);
    let (mut per_source, mut total) = (20u32, 200u32);
    let mut tunnel = None;
    while let Some(a) = it.next() {
        let mut val = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
        match a.as_str() {
            "-h" | "--help" => {
                print!("{HELP}");
                return Ok(None);
            }
            "-V" | "--version" => {
                println!("support-relay {}", env!("CARGO_PKG_VERSION"));
                return Ok(None);
            }
            "--listen" => {
                listen = val("--listen")?
                    .parse()
                    .map_err(|_| "--listen needs ADDR:PORT".to_string())?
            }
            "--tunnel" => {
                let id = val("--tunnel")?;
                if id.len() != 16 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err("--tunnel needs a tunnel id (16 hex digits)".into());
                }
                tunnel = Some(id);
            }
            "--device-key" => device = Some(key(&val("--device-key")?, "--device-key")?),
            "--admin-key" => admin = Some(key(&val("--admin-key")?, "--admin-key")?),
            "--lifetime" => {
                let secs: u64 = val("--lifetime")?
                    .parse()
                    .map_err(|_| "--lifetime needs whole seconds".to_string())?;
                lifetime = Some(Duration::from_secs(secs));
            }
            "--handshakes-per-source" => {
                per_source = val(&a)?
                    .parse()
                    .map_err(|_| format!("{a} needs a number"))?;
            }
            "--handshakes-total" => {
                total = val(&a)?
                    .parse()
                    .map_err(|_| format!("{a} needs a number"))?
            }
            other => return Err(format!("unknown argument {other:?}; see --help")),
        }
    }
    let device_key = device.ok_or("--device-key is required")?;
    let admin_key = admin.ok_or("--admin-key is required")?;
    if device_key == admin_key {
        return Err("the device and admin keys must differ".into());
    }
    Ok(Some(Args {
        listen,
        tunnel,
        config: RelayConfig {
            device_key,
            admin_key,
            handshakes_per_source: per_source,
            handshakes_total: total,
        },
        lifetime: lifetime
            .ok_or("--lifetime is required (the relay always ends with its tunnel)")?,
    }))
}

fn main() -> ExitCode {
    let args = match parse(std::env::args().skip(1)) {
        Ok(Some(a)) => a,
        Ok(None) => return ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("support-relay: {e}");
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("support-relay: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> std::io::Result<()> {
    let socket = support_relay::bind(args.listen)?;
    // Tests and the local provider read this line to learn the bound port.
    println!("relaying on {}", socket.local_addr()?);
    eprintln!(
        "support-relay: relaying for {} s{}",
        args.lifetime.as_secs(),
        args.tunnel
            .as_deref()
            .map(|t| format!(" (tunnel {t})"))
            .unwrap_or_default()
    );
    let stop = AtomicBool::new(false);
    let stats = serve(
        &socket,
        &args.config,
        Instant::now() + args.lifetime,
        &stop,
        &mut |line| {
            eprintln!("support-relay: {line}");
        },
    )?;
    eprintln!("support-relay: lifetime over; exiting ({stats:?})");
    Ok(())
}
