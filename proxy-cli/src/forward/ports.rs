//! What `proxy forward` tells about its ports: the kubectl lines on stdout, the
//! environment of CMD and the `--ports-file`.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::io::{self, Write as _};
use std::net::SocketAddr;
use std::path::Path;

use super::{Bound, Mapping, PortSpec};
use crate::registry::Protocol;

/// The kubectl lines on stdout, flushed.
pub(super) fn print_lines(lines: &[String]) -> io::Result<()> {
    let mut out = io::stdout().lock();
    for line in lines {
        writeln!(out, "{line}")?;
    }
    out.flush()
}

/// `Forwarding from 127.0.0.1:8888 -> 5000`, as kubectl prints it; `-> 53/udp` for UDP.
///
/// # Examples
///
/// ```
/// use proxy_cli::forward::{Mapping, Protocol, forwarding_line};
///
/// let m = Mapping { protocol: Protocol::Tcp, local: 0, remote: 5000 };
/// assert_eq!(
///     forwarding_line("[::1]:8888".parse()?, m),
///     "Forwarding from [::1]:8888 -> 5000"
/// );
/// let m = Mapping { protocol: Protocol::Udp, local: 5353, remote: 53 };
/// assert_eq!(
///     forwarding_line("127.0.0.1:5353".parse()?, m),
///     "Forwarding from 127.0.0.1:5353 -> 53/udp"
/// );
/// # Ok::<(), std::net::AddrParseError>(())
/// ```
pub fn forwarding_line(addr: SocketAddr, m: Mapping) -> String {
    match m.protocol {
        Protocol::Tcp => format!("Forwarding from {addr} -> {}", m.remote),
        Protocol::Udp => format!("Forwarding from {addr} -> {}/udp", m.remote),
    }
}

/// `LOCAL:REMOTE[/udp]` for every mapping, in order, with the bound local port: the
/// value of `PROXY_FORWARD_PORTS`.
pub(super) fn ports_env<H>(bound: &[Bound<H>]) -> String {
    let mut out = String::new();
    // The sockets of one mapping are adjacent and share the port.
    for (i, b) in bound.iter().enumerate() {
        if i > 0 && bound[i - 1].slot == b.slot {
            continue;
        }
        if !out.is_empty() {
            out.push(' ');
        }
        let _ = write!(out, "{}:{}", b.addr.port(), b.mapping.remote);
        if b.mapping.protocol == Protocol::Udp {
            out.push_str("/udp");
        }
    }
    out
}

/// The `--ports-file` content: one object per bound socket, in stdout's order.
pub(super) fn ports_json<H>(target: &str, specs: &[PortSpec], bound: &[Bound<H>]) -> String {
    let mut s = String::from("{\n  \"version\": 1,\n  \"target\": ");
    push_json_string(&mut s, target);
    s.push_str(",\n  \"forwards\": [");
    for (i, b) in bound.iter().enumerate() {
        s.push_str(if i == 0 { "\n    " } else { ",\n    " });
        let _ = write!(
            s,
            "{{\"protocol\": \"{}\", \"address\": \"{}\", \"local_port\": {}, \
             \"remote_port\": {}, \"spec\": ",
            b.mapping.protocol,
            b.addr.ip(),
            b.addr.port(),
            b.mapping.remote,
        );
        push_json_string(&mut s, specs[b.spec].token());
        s.push('}');
    }
    s.push_str(if bound.is_empty() {
        "]\n}\n"
    } else {
        "\n  ]\n}\n"
    });
    s
}

/// Appends `value` as a JSON string.
pub(super) fn push_json_string(s: &mut String, value: &str) {
    s.push('"');
    for c in value.chars() {
        match c {
            '"' => s.push_str("\\\""),
            '\\' => s.push_str("\\\\"),
            '\n' => s.push_str("\\n"),
            '\r' => s.push_str("\\r"),
            '\t' => s.push_str("\\t"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(s, "\\u{:04x}", u32::from(c));
            }
            c => s.push(c),
        }
    }
    s.push('"');
}

/// Writes `content` to a temporary file beside `path`, then renames it to `path`, so a
/// reader sees the whole file or none.
///
/// The temporary file has a random name and is created with `O_CREAT | O_EXCL`, which
/// never follows a symlink: a name anyone could guess (such as one made of the process
/// id) would let whoever can write to the directory plant a link there and have proxy
/// overwrite the link's target.
pub(super) fn write_atomically(path: &Path, content: &str) -> io::Result<()> {
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not a file name"))?;
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let mut prefix = OsString::from(".");
    prefix.push(name);
    prefix.push(".");
    let mut builder = tempfile::Builder::new();
    builder.prefix(&prefix).suffix(".tmp");
    // Readable by others, as a file created with `File::create` is (the umask applies).
    #[cfg(unix)]
    builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666));
    // Removed on drop when anything below fails.
    let mut tmp = builder.tempfile_in(dir)?;
    tmp.write_all(content.as_bytes())?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// Removes `path`; a missing file is fine.
pub(super) fn remove_file(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}
