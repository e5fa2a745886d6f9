//! Every setting by key: `proxy_config_set` and `proxy_config_get` over proxy-core's one
//! table of keys ([`proxy_core::spec::KEYS`]), and the table itself for C
//! (`proxy_key_count`, `proxy_key_name`, ...). A key added to the table is a C key at
//! once, with the parser and printer the CLI and the config file use.

use std::ffi::{CString, c_char};
use std::sync::OnceLock;

use proxy_core::ForwardSpec;
use proxy_core::spec::{KEYS, SetError, find};

use crate::config::proxy_config;
use crate::handle::{copy_c_string, try_mut, try_ref, try_str};
use crate::panic::ffi_panic_boundary;
use crate::status::{Failure, proxy_status};

impl From<SetError> for Failure {
    fn from(e: SetError) -> Self {
        Failure::setting(e.to_string())
    }
}

/// The strings of one key, NUL-terminated for C.
struct CKey {
    name: CString,
    example: CString,
    help: CString,
}

/// [`KEYS`] as C strings, made on first use and kept for the life of the process.
fn c_keys() -> &'static [CKey] {
    static TABLE: OnceLock<Vec<CKey>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let c = |s: &str| CString::new(s).expect("a key's text has no NUL");
        KEYS.iter()
            .map(|k| CKey {
                name: c(k.name),
                example: c(k.example),
                help: c(k.help),
            })
            .collect()
    })
}

/// The string `field` picks from key `index`, or NULL past the end.
fn key_string(index: usize, field: fn(&'static CKey) -> &'static CString) -> *const c_char {
    ffi_panic_boundary! { ptr:
        c_keys()
            .get(index)
            .map_or(std::ptr::null_mut(), |k| field(k).as_ptr().cast_mut())
    }
    .cast_const()
}

/// Sets the setting `key` from its text `value`, as the CLI's `--key` flag (with `-` for
/// `_`) and the config file's `key = "value"` read it: `("idle_timeout", "30s")`,
/// `("balance", "least-connections")`, `("deny", "10.0.0.0/8,192.168.1.7")`,
/// `("max_connections", "1000")`. Every key is listed by `proxy_key_name`, with an
/// example value (`proxy_key_example`) and what it does (`proxy_key_help`). Leading and
/// trailing spaces of `value` are ignored. A setting that can be off is turned off by
/// the empty string, or for the timers by `"0"` (its help says which).
///
/// A key may set more than its own field, exactly as on the command line: `idle_timeout`
/// also sets `udp_idle_timeout`, and `connect_timeout` raises `connect_total_timeout` to
/// at least itself. Setting `resolver` removes a resolver callback, as
/// `proxy_config_set_resolver` does. Rules between settings (such as `accept_burst`
/// needing `accept_rate`) are checked by `proxy_forwarder_start` and
/// `proxy_forwarder_reload`, whose last error names the key at fault.
///
/// Returns `PROXY_STATUS_INVALID_SETTING` for an unknown key or a value the key does not
/// take; the last error names the key and the value (such as ``idle_timeout: `5x` is not
/// a duration: ...``, or for a misspelt key ``idle_timout: is not a setting; did you mean
/// `idle_timeout`?``). The config is unchanged then. `key` and `value` are only read
/// during the call.
///
/// Thread safety: see `proxy_config`.
#[unsafe(no_mangle)]
pub extern "C" fn proxy_config_set(
    config: *mut proxy_config,
    key: *const c_char,
    value: *const c_char,
) -> proxy_status {
    ffi_panic_boundary! {
        let config = try_mut(config, "config")?;
        let key = try_str(key, "key")?;
        let value = try_str(value, "value")?;
        config.spec.set(key, value)?;
        if key == "resolver" {
            config.callback = None;
        }
        Ok(())
    }
}

/// Writes the value of the setting `key` to `buf`, in the text form `proxy_config_set`
/// takes (so setting what it reads changes nothing): `"30s"`, `"least-connections"`,
/// `"127.0.0.1:0,[::1]:0"`; `""` (or `"0"` for a timer) for a setting that is off or
/// unset. A new config reads every default. The resolver callback and the worker threads are not
/// keys: `resolver` reads the built-in resolver chosen, whether or not a callback is set.
///
/// The buffer contract is `proxy_status_message`'s: NUL-terminated, `*out_n` receives the
/// length without the NUL, `buf == NULL` with `len == 0` asks for the length only,
/// `PROXY_STATUS_BUFFER_TOO_SMALL` writes nothing.
///
/// Errors: `PROXY_STATUS_INVALID_SETTING` for an unknown key (the last error names it);
/// `PROXY_STATUS_BUFFER_TOO_SMALL`; `PROXY_STATUS_NULL_PARAMETER`.
///
/// Thread safety: see `proxy_config` (it only reads the config, as
/// `proxy_forwarder_start` does).
#[unsafe(no_mangle)]
pub extern "C" fn proxy_config_get(
    config: *const proxy_config,
    key: *const c_char,
    buf: *mut c_char,
    len: usize,
    out_n: *mut usize,
) -> proxy_status {
    ffi_panic_boundary! {
        let config = try_ref(config, "config")?;
        let name = try_str(key, "key")?;
        // An unknown key: the message `set` gives it, with the closest key's name.
        let key = find(name).ok_or_else(|| unknown(name))?;
        copy_c_string(&key.get(&config.spec), buf, len, out_n)
    }
}

/// The failure for the unknown key `name`: [`ForwardSpec::set`]'s, which suggests a close
/// key, and which it gives whatever the value.
fn unknown(name: &str) -> Failure {
    match ForwardSpec::default().set(name, "") {
        Err(e) => e.into(),
        Ok(()) => Failure::setting(format!("{name}: is not a setting")),
    }
}

/// The number of keys `proxy_config_set` takes: `proxy_key_name(0)` to
/// `proxy_key_name(proxy_key_count() - 1)` name them.
///
/// Thread safety: may be called from any thread at any time.
#[unsafe(no_mangle)]
pub extern "C" fn proxy_key_count() -> usize {
    KEYS.len()
}

/// The name of key `index` (below `proxy_key_count()`), such as `"idle_timeout"`: what
/// `proxy_config_set` and `proxy_config_get` take, the config file's key, and the CLI's
/// flag with `-` for `_` (`--idle-timeout`). Keys come in the order front ends apply
/// them when given several at once. NULL when `index` is past the end.
///
/// The string is static and NUL-terminated: never free or change it.
///
/// Thread safety: may be called from any thread at any time.
#[unsafe(no_mangle)]
pub extern "C" fn proxy_key_name(index: usize) -> *const c_char {
    key_string(index, |k| &k.name)
}

/// A valid value of key `index` other than its default, such as `"10s"`, to show how its
/// values are written. NULL when `index` is past the end.
///
/// The string is static and NUL-terminated: never free or change it.
///
/// Thread safety: may be called from any thread at any time.
#[unsafe(no_mangle)]
pub extern "C" fn proxy_key_example(index: usize) -> *const c_char {
    key_string(index, |k| &k.example)
}

/// What key `index` does, in a sentence or a few, for help texts. NULL when `index` is
/// past the end.
///
/// The string is static and NUL-terminated: never free or change it.
///
/// Thread safety: may be called from any thread at any time.
#[unsafe(no_mangle)]
pub extern "C" fn proxy_key_help(index: usize) -> *const c_char {
    key_string(index, |k| &k.help)
}

#[cfg(test)]
mod tests {
    //! Through the exported functions, as C calls them.

    use std::ffi::{CStr, CString, c_void};

    use super::*;
    use crate::config::{
        proxy_config_add_listen, proxy_config_add_name_server, proxy_config_clear_listen,
        proxy_config_free, proxy_config_new, proxy_config_set_limit, proxy_config_set_resolver,
        proxy_config_set_resolver_callback, proxy_config_set_target, proxy_config_set_timeout,
        proxy_config_set_transport, proxy_limit, proxy_resolver, proxy_timeout, proxy_transport,
    };
    use crate::resolve::proxy_resolution;

    /// A bad value for each form of value in [`KEYS`] (`Key::value`). A key of a new form
    /// fails the test until it has one here.
    const BAD: &[(&str, &str)] = &[
        ("tcp|udp|tcp,udp", "sctp"),
        ("PORT|IP:PORT,...", "localhost:80"),
        ("HOST:PORT|srv:NAME", "web.default:http"),
        ("system|hickory", "bind9"),
        ("IP[:PORT],...", "dns.example"),
        ("DURATION", "5x"),
        ("BOOL", "yes"),
        ("N", "-1"),
        ("POLICY", "random"),
        ("CIDR,...", "10.0.0.0/33"),
        ("v1|v2", "v3"),
        ("auto|copy|sockmap", "zero-copy"),
        ("SIZE", "12Q"),
        ("[HOST]/PATH=TARGET[;KEY=VALUE],...", "shop.example=web:80"),
        ("NAME=TARGET[;KEY=VALUE],...", "/api=web:443"),
        ("PATH", "a\nb"),
        ("NAME", "a;b"),
        ("DOMAIN", "-bad.example"),
        ("REGEX,...", "^(a"),
    ];

    /// A config made and freed as C does.
    struct Config(*mut proxy_config);

    impl Config {
        fn new() -> Self {
            let c = proxy_config_new();
            assert!(!c.is_null());
            Config(c)
        }

        fn set(&self, key: &str, value: &str) -> proxy_status {
            let (key, value) = (CString::new(key).unwrap(), CString::new(value).unwrap());
            proxy_config_set(self.0, key.as_ptr(), value.as_ptr())
        }

        /// The value of `key`, sized as a C caller does: the length first.
        fn get(&self, key: &str) -> Result<String, proxy_status> {
            let key = CString::new(key).unwrap();
            let mut n = 0;
            let s = proxy_config_get(self.0, key.as_ptr(), std::ptr::null_mut(), 0, &mut n);
            if s != proxy_status::Ok {
                return Err(s);
            }
            let mut buf = vec![0 as c_char; n + 1];
            let s = proxy_config_get(self.0, key.as_ptr(), buf.as_mut_ptr(), buf.len(), &mut n);
            assert_eq!(s, proxy_status::Ok);
            // SAFETY: `proxy_config_get` wrote a NUL-terminated string into `buf`.
            let text = unsafe { CStr::from_ptr(buf.as_ptr()) };
            assert_eq!(text.to_bytes().len(), n);
            Ok(text.to_str().unwrap().to_owned())
        }

        /// Every key's value.
        fn values(&self) -> Vec<String> {
            KEYS.iter().map(|k| self.get(k.name).unwrap()).collect()
        }

        fn inner(&self) -> &crate::config::Config {
            try_ref(self.0.cast_const(), "config").unwrap()
        }
    }

    impl Drop for Config {
        fn drop(&mut self) {
            proxy_config_free(self.0);
        }
    }

    fn last_error() -> String {
        let mut buf = [0 as c_char; 1024];
        let mut n = 0;
        assert_eq!(
            crate::proxy_last_error(buf.as_mut_ptr(), buf.len(), &mut n),
            proxy_status::Ok
        );
        // SAFETY: `proxy_last_error` wrote a NUL-terminated string into `buf`.
        unsafe { CStr::from_ptr(buf.as_ptr()) }
            .to_str()
            .unwrap()
            .to_owned()
    }

    fn c_str(p: *const c_char) -> Option<&'static str> {
        // SAFETY: the key functions return NULL or a static NUL-terminated string.
        (!p.is_null()).then(|| unsafe { CStr::from_ptr(p) }.to_str().unwrap())
    }

    /// Every key of the Rust table is a C key: `proxy_config_set` takes its example and
    /// `proxy_config_get` reads it back, and a new config reads its default.
    #[test]
    fn every_key_is_set_and_read_back_through_the_c_functions() {
        assert!(KEYS.len() >= 40, "{} keys", KEYS.len());
        for key in KEYS {
            let config = Config::new();
            assert_eq!(
                config.get(key.name),
                Ok(key.default_value()),
                "{}",
                key.name
            );
            let status = config.set(key.name, key.example);
            assert_eq!(
                status,
                proxy_status::Ok,
                "{} = {}: {}",
                key.name,
                key.example,
                last_error()
            );
            assert_eq!(
                config.get(key.name).as_deref(),
                Ok(key.example),
                "{}",
                key.name
            );
            // The same field a Rust front end sets.
            let mut spec = ForwardSpec::default();
            spec.set(key.name, key.example).unwrap();
            assert_eq!(config.inner().spec, spec, "{}", key.name);
        }
    }

    #[test]
    fn the_key_table_is_listed_with_static_strings() {
        assert_eq!(proxy_key_count(), KEYS.len());
        for (i, key) in KEYS.iter().enumerate() {
            assert_eq!(c_str(proxy_key_name(i)), Some(key.name));
            assert_eq!(c_str(proxy_key_example(i)), Some(key.example));
            assert_eq!(c_str(proxy_key_help(i)), Some(key.help));
            // The same pointer each time: made once.
            assert_eq!(proxy_key_name(i), proxy_key_name(i));
        }
        for past in [KEYS.len(), KEYS.len() + 1, usize::MAX] {
            assert!(proxy_key_name(past).is_null());
            assert!(proxy_key_example(past).is_null());
            assert!(proxy_key_help(past).is_null());
        }
    }

    /// A bad value of every form, for every key of that form: refused, the last error
    /// naming the key and the value, and the config unchanged.
    #[test]
    fn bad_values_name_the_key_and_the_value_and_change_nothing() {
        for key in KEYS {
            let bad = BAD
                .iter()
                .find(|(form, _)| *form == key.value)
                .map(|(_, bad)| *bad)
                .unwrap_or_else(|| {
                    panic!(
                        "`{}` takes {}: add a bad value of it to BAD",
                        key.name, key.value
                    )
                });
            let config = Config::new();
            assert_eq!(config.set(key.name, key.example), proxy_status::Ok);
            let before = config.values();
            let spec = config.inner().spec.clone();
            assert_eq!(
                config.set(key.name, bad),
                proxy_status::InvalidSetting,
                "{} = {bad}",
                key.name
            );
            let e = last_error();
            assert!(e.starts_with(&format!("{}: ", key.name)), "{e}");
            assert!(e.contains(bad), "{} = {bad}: {e}", key.name);
            assert_eq!(config.values(), before, "{}", key.name);
            assert_eq!(config.inner().spec, spec, "{}", key.name);
        }
    }

    #[test]
    fn unknown_keys_null_and_small_buffers() {
        let config = Config::new();
        assert_eq!(
            config.set("idle_timout", "1s"),
            proxy_status::InvalidSetting
        );
        assert_eq!(
            last_error(),
            "idle_timout: is not a setting; did you mean `idle_timeout`?"
        );
        assert_eq!(config.get("idle_timout"), Err(proxy_status::InvalidSetting));
        assert_eq!(
            last_error(),
            "idle_timout: is not a setting; did you mean `idle_timeout`?"
        );
        assert_eq!(
            config.get("no such thing"),
            Err(proxy_status::InvalidSetting)
        );
        assert_eq!(last_error(), "no such thing: is not a setting");

        let (key, value) = (c"deny", c"10.0.0.0/8");
        let null = std::ptr::null();
        assert_eq!(
            proxy_config_set(std::ptr::null_mut(), key.as_ptr(), value.as_ptr()),
            proxy_status::NullParameter
        );
        assert_eq!(
            proxy_config_set(config.0, null, value.as_ptr()),
            proxy_status::NullParameter
        );
        assert_eq!(last_error(), "`key` must not be NULL");
        assert_eq!(
            proxy_config_set(config.0, key.as_ptr(), null),
            proxy_status::NullParameter
        );
        assert_eq!(last_error(), "`value` must not be NULL");
        let not_utf8 = [0xffu8, 0];
        assert_eq!(
            proxy_config_set(config.0, key.as_ptr(), not_utf8.as_ptr().cast()),
            proxy_status::InvalidUtf8
        );

        assert_eq!(config.set("deny", "10.0.0.0/8"), proxy_status::Ok);
        let mut buf = [0x55 as c_char; 10];
        let mut n = 99;
        assert_eq!(
            proxy_config_get(config.0, key.as_ptr(), buf.as_mut_ptr(), 10, &mut n),
            proxy_status::BufferTooSmall
        );
        assert_eq!((n, buf[0]), (99, 0x55));
        assert_eq!(
            proxy_config_get(config.0, key.as_ptr(), buf.as_mut_ptr(), 11, &mut n),
            proxy_status::Ok
        );
        assert_eq!(n, 10);
        assert_eq!(
            proxy_config_get(std::ptr::null(), key.as_ptr(), buf.as_mut_ptr(), 11, &mut n),
            proxy_status::NullParameter
        );
        assert_eq!(
            proxy_config_get(config.0, null, buf.as_mut_ptr(), 11, &mut n),
            proxy_status::NullParameter
        );
        assert_eq!(
            proxy_config_get(
                config.0,
                key.as_ptr(),
                buf.as_mut_ptr(),
                11,
                std::ptr::null_mut()
            ),
            proxy_status::NullParameter
        );
    }

    /// The typed setters write the fields the keys read.
    #[test]
    fn typed_setters_write_the_keys() {
        let config = Config::new();
        let c = config.0;
        assert_eq!(
            proxy_config_set_transport(c, proxy_transport::Both as u32),
            proxy_status::Ok
        );
        assert_eq!(config.get("protocol").unwrap(), "tcp,udp");
        assert_eq!(
            proxy_config_set_transport(c, proxy_transport::Http as u32),
            proxy_status::Ok
        );
        assert_eq!(config.get("protocol").unwrap(), "http");
        assert_eq!(
            proxy_config_set_transport(c, proxy_transport::Both as u32),
            proxy_status::Ok
        );
        assert_eq!(
            proxy_config_add_listen(c, c"127.0.0.1:0".as_ptr()),
            proxy_status::Ok
        );
        assert_eq!(
            proxy_config_add_listen(c, c"[::1]:53".as_ptr()),
            proxy_status::Ok
        );
        assert_eq!(config.get("listen").unwrap(), "127.0.0.1:0,[::1]:53");
        assert_eq!(proxy_config_clear_listen(c), proxy_status::Ok);
        assert_eq!(config.get("listen").unwrap(), "");
        // After a bare port (every address), added addresses follow its `[::]:PORT`.
        assert_eq!(config.set("listen", "53"), proxy_status::Ok);
        assert_eq!(
            proxy_config_add_listen(c, c"127.0.0.1:54".as_ptr()),
            proxy_status::Ok
        );
        assert_eq!(config.get("listen").unwrap(), "[::]:53,127.0.0.1:54");
        assert_eq!(
            proxy_config_set_target(c, c"db.internal:5432".as_ptr()),
            proxy_status::Ok
        );
        assert_eq!(config.get("target").unwrap(), "db.internal:5432");
        assert_eq!(
            proxy_config_add_name_server(c, c"10.0.0.1".as_ptr()),
            proxy_status::Ok
        );
        assert_eq!(config.get("name_servers").unwrap(), "10.0.0.1:53");

        let timers = [
            (proxy_timeout::Connect, "connect_timeout"),
            (proxy_timeout::ConnectTotal, "connect_total_timeout"),
            (proxy_timeout::Idle, "idle_timeout"),
            (proxy_timeout::HalfClose, "half_close_timeout"),
            (proxy_timeout::MaxLifetime, "max_lifetime"),
            (proxy_timeout::UdpSessionIdle, "udp_idle_timeout"),
        ];
        for (kind, key) in timers {
            assert_eq!(
                proxy_config_set_timeout(c, kind as u32, 90_000),
                proxy_status::Ok
            );
            assert_eq!(config.get(key).unwrap(), "90s", "{key}");
        }
        // The typed idle timer is TCP's only, and a typed connect timer does not raise
        // the budget (as before the keys).
        assert_eq!(
            proxy_config_set_timeout(c, proxy_timeout::Idle as u32, 0),
            proxy_status::Ok
        );
        assert_eq!(config.get("idle_timeout").unwrap(), "0");
        assert_eq!(config.get("udp_idle_timeout").unwrap(), "90s");

        let limits = [
            (proxy_limit::MaxConnections, "max_connections"),
            (proxy_limit::MaxPerSource, "max_per_source"),
            (proxy_limit::AcceptRate, "accept_rate"),
            (proxy_limit::AcceptBurst, "accept_burst"),
        ];
        for (kind, key) in limits {
            assert_eq!(proxy_config_set_limit(c, kind as u32, 7), proxy_status::Ok);
            assert_eq!(config.get(key).unwrap(), "7", "{key}");
            assert_eq!(proxy_config_set_limit(c, kind as u32, 0), proxy_status::Ok);
            assert_eq!(config.get(key).unwrap(), "", "{key}");
        }
    }

    unsafe extern "C" fn resolve(
        _: *mut c_void,
        _: *const c_char,
        _: *mut proxy_resolution,
    ) -> u32 {
        proxy_status::Resolver as u32
    }

    /// The `resolver` key chooses a built-in resolver, as `proxy_config_set_resolver`
    /// does: a callback set before goes.
    #[test]
    fn the_resolver_key_replaces_a_callback() {
        let config = Config::new();
        let set_callback = || {
            let s =
                proxy_config_set_resolver_callback(config.0, Some(resolve), std::ptr::null_mut());
            assert_eq!(s, proxy_status::Ok);
            assert!(config.inner().callback.is_some());
        };
        set_callback();
        assert_eq!(config.get("resolver").unwrap(), "system");
        assert_eq!(config.set("resolver", "hickory"), proxy_status::Ok);
        assert!(config.inner().callback.is_none());
        set_callback();
        assert_eq!(config.set("resolver", "nope"), proxy_status::InvalidSetting);
        assert!(
            config.inner().callback.is_some(),
            "a bad value changes nothing"
        );
        assert_eq!(
            proxy_config_set_resolver(config.0, proxy_resolver::System as u32),
            proxy_status::Ok
        );
        assert!(config.inner().callback.is_none());
        assert_eq!(config.get("resolver").unwrap(), "system");
    }
}
