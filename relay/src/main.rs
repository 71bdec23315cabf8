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

/// Parses the command line: every flag once, no positional argument.
/// `Ok(None)` after printing help or the version.
fn parse(args: impl IntoIterator<Item = std::ffi::OsString>) -> Result<Option<Args>, String> {
    let mut p = lexopt::Parser::from_args(args);
    let mut listen: Option<SocketAddr> = None;
    let (mut device, mut admin, mut lifetime) = (None, None, None);
    let (mut per_source, mut total) = (None, None);
    let mut tunnel = None;
    while let Some(arg) = p.next().map_err(|e| e.to_string())? {
        let flag = match arg {
            lexopt::Arg::Short('h') | lexopt::Arg::Long("help") => {
                print!("{HELP}");
                return Ok(None);
            }
            lexopt::Arg::Short('V') | lexopt::Arg::Long("version") => {
                println!("support-relay {}", env!("CARGO_PKG_VERSION"));
                return Ok(None);
            }
            lexopt::Arg::Long(f) => format!("--{f}"),
            lexopt::Arg::Short(c) => return Err(format!("unknown option -{c}")),
            lexopt::Arg::Value(v) => {
                return Err(format!(
                    "unexpected argument '{}': every setting is a --flag",
                    v.to_string_lossy()
                ))
            }
        };
        let value = p
            .value()
            .map_err(|_| format!("{flag} needs a value"))?
            .into_string()
            .map_err(|_| format!("{flag}: not valid UTF-8"))?;
        let slot_taken = match flag.as_str() {
            "--listen" => listen
                .replace(
                    value
                        .parse()
                        .map_err(|_| "--listen needs ADDR:PORT".to_string())?,
                )
                .is_some(),
            "--tunnel" => {
                if value.len() != 16 || !value.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err("--tunnel needs a tunnel id (16 hex digits)".into());
                }
                tunnel.replace(value).is_some()
            }
            "--device-key" => device.replace(key(&value, "--device-key")?).is_some(),
            "--admin-key" => admin.replace(key(&value, "--admin-key")?).is_some(),
            "--lifetime" => {
                let secs: u64 = value
                    .parse()
                    .map_err(|_| "--lifetime needs whole seconds".to_string())?;
                lifetime.replace(Duration::from_secs(secs)).is_some()
            }
            "--handshakes-per-source" => per_source
                .replace(
                    value
                        .parse()
                        .map_err(|_| format!("{flag} needs a number"))?,
                )
                .is_some(),
            "--handshakes-total" => total
                .replace(
                    value
                        .parse()
                        .map_err(|_| format!("{flag} needs a number"))?,
                )
                .is_some(),
            _ => return Err(format!("unknown option {flag}")),
        };
        if slot_taken {
            return Err(format!("{flag} is given twice"));
        }
    }
    let device_key = device.ok_or("--device-key is required")?;
    let admin_key = admin.ok_or("--admin-key is required")?;
    if device_key == admin_key {
        return Err("the device and admin keys must differ".into());
    }
    Ok(Some(Args {
        listen: listen.unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 51820))),
        tunnel,
        config: RelayConfig {
            device_key,
            admin_key,
            handshakes_per_source: per_source.unwrap_or(20),
            handshakes_total: total.unwrap_or(200),
        },
        lifetime: lifetime
            .ok_or("--lifetime is required (the relay always ends with its tunnel)")?,
    }))
}

fn main() -> ExitCode {
    let args = match parse(std::env::args_os().skip(1)) {
        Ok(Some(a)) => a,
        Ok(None) => return ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("support-relay: {e}\nSee: support-relay --help");
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(args: &[&str]) -> Result<Option<Args>, String> {
        parse(args.iter().map(std::ffi::OsString::from))
    }

    #[test]
    fn the_command_line_is_strict() {
        let k1 = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";
        let k2 = "AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI=";
        let base = ["--device-key", k1, "--admin-key", k2, "--lifetime", "5"];
        let a = parse_str(&base).expect("ok").expect("args");
        assert_eq!(a.listen, SocketAddr::from(([0, 0, 0, 0], 51820)));
        assert_eq!(a.config.handshakes_per_source, 20);
        let with = |extra: &[&str]| {
            let mut v: Vec<&str> = base.to_vec();
            v.extend_from_slice(extra);
            parse_str(&v).err().unwrap_or_default()
        };
        let a = parse_str(&[&base[..], &["--listen=127.0.0.1:9"]].concat())
            .expect("ok")
            .expect("args");
        assert_eq!(a.listen, SocketAddr::from(([127, 0, 0, 1], 9)));
        assert!(with(&["stray"]).contains("unexpected argument 'stray'"));
        assert!(with(&["--lifetime", "9"]).contains("--lifetime is given twice"));
        assert!(with(&["--bogus", "1"]).contains("unknown option --bogus"));
        assert!(with(&["-x"]).contains("unknown option -x"));
        assert!(with(&["--tunnel"]).contains("--tunnel needs a value"));
        assert!(with(&["--tunnel", "zz"]).contains("16 hex digits"));
    }
}
