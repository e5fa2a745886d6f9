//! Fuzzes the HTTP layer's text grammars: the service proxy URL
//! (`/api/v1/namespaces/NS/services/[SCHEME:]NAME[:PORT]/proxy/PATH`) and the `route` key
//! (`[HOST]/PATH=TARGET[;KEY=VALUE...]`). Neither ever panics; a service URL it accepts is
//! its prefix and path put back together, and its upstream path starts with `/`; a route
//! it accepts has a path starting with `/`, and written back parses to the same route.
#![no_main]

use libfuzzer_sys::fuzz_target;
use proxy_core::spec::Route;
use proxy_http::service::ServiceUrl;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(Some(url)) = ServiceUrl::parse(s) {
        assert_eq!(format!("{}{}", url.prefix, url.path), s, "{s:?}");
        assert!(url.upstream_path_and_query(None).starts_with('/'), "{s:?}");
        assert!(!url.name.is_empty() && !url.namespace.is_empty(), "{s:?}");
    }
    if let Ok(route) = s.parse::<Route>() {
        assert!(route.path.starts_with('/'), "{s:?}");
        let written = route.to_string();
        let again: Route = written
            .parse()
            .unwrap_or_else(|e| panic!("{s:?} written as {written:?} does not parse: {e}"));
        assert_eq!(again, route, "{s:?}");
    }
});
