//! The services `proxy` subresource,
//! `/api/v1/namespaces/NS/services/[http:]NAME[:PORT]/proxy/PATH`, answered by proxy-http's
//! [`ServiceProxy`] with the Service's running pods as its endpoints, each dialed as a
//! port-forward stream to it is (the server's [`Dial`](crate::dial::Dial)).

use std::sync::{Arc, Weak};

use proxy_http::service::{EndpointsError, PortRef, ServiceEndpoints, ServiceProxy, ServiceUrl};
use proxy_http::{Connecting, Connector, Io};

use super::Shared;
use crate::objects::Pod;

/// The service proxy of a server: no filter (the API server has none), the core's HTTP
/// defaults otherwise.
pub(super) fn service_proxy(shared: Weak<Shared>) -> ServiceProxy {
    let mut spec = proxy_core::ForwardSpec::default();
    spec.protocol = proxy_core::Transport::Http;
    ServiceProxy::endpoints(&spec, Arc::new(PodEndpoints(shared)))
}

/// Whether `path` is the service proxy's, well-formed or not.
pub(super) fn is_service_proxy(path: &str) -> bool {
    !matches!(ServiceUrl::parse(path), Ok(None))
}

/// A Service's endpoints: its running pods, at the pod port its port maps to.
struct PodEndpoints(Weak<Shared>);

impl ServiceEndpoints for PodEndpoints {
    fn endpoints(&self, url: &ServiceUrl) -> Result<Vec<Arc<dyn Connector>>, EndpointsError> {
        let shared = self
            .0
            .upgrade()
            .ok_or_else(|| EndpointsError::Unavailable("the server is shutting down".to_owned()))?;
        let cluster = shared.cluster();
        let not_found = || format!("services \"{}\" not found", url.name);
        let service = (cluster.service(&url.namespace, &url.name))
            .ok_or_else(|| EndpointsError::NotFound(not_found()))?;
        // As the API server: a number or a name picks a port; no port, the unnamed one.
        let port = match &url.port {
            Some(PortRef::Number(n)) => service.ports.iter().find(|p| p.port == *n),
            Some(PortRef::Name(name)) => {
                (service.ports.iter()).find(|p| p.name.as_deref() == Some(name.as_str()))
            }
            None => (service.ports.iter()).find(|p| p.name.as_deref().unwrap_or("").is_empty()),
        };
        let Some(port) = port else {
            // The API server's two messages (both 503).
            return Err(EndpointsError::Unavailable(match &url.port {
                Some(PortRef::Number(n)) => {
                    format!("no service port {n} found for service \"{}\"", url.name)
                }
                _ => format!("no endpoints available for service \"{}\"", url.name),
            }));
        };
        let port_text = port.port.to_string();
        // `--service` labels its pods so that the selector picks exactly them.
        let endpoints = (cluster.pods_selected(&service.namespace, &service.selector))
            .into_iter()
            .filter(|pod| pod.running)
            .filter_map(|pod| {
                let target = service.target_port(&port_text, pod)?;
                Some(Arc::new(PodConnector {
                    shared: self.0.clone(),
                    pod: pod.clone(),
                    port: target,
                }) as Arc<dyn Connector>)
            })
            .collect();
        Ok(endpoints)
    }
}

/// Connects to one port of one pod, as a port-forward stream does.
struct PodConnector {
    shared: Weak<Shared>,
    pod: Pod,
    port: u16,
}

impl Connector for PodConnector {
    fn connect(&self) -> Connecting<'_> {
        Box::pin(async move {
            let shared = (self.shared.upgrade())
                .ok_or_else(|| std::io::Error::other("the server is shutting down"))?;
            let stream = shared.dialer.dial(&self.pod, self.port).await?;
            Ok(Box::new(stream) as Box<dyn Io>)
        })
    }

    fn name(&self) -> String {
        format!("pod {}/{}:{}", self.pod.namespace, self.pod.name, self.port)
    }
}
