use serde_json::json;

use super::*;

fn pod(value: Value) -> Pod {
    pod_from_json(value).unwrap()
}

fn web_pod() -> Pod {
    pod(json!({
        "metadata": { "name": "web-1" },
        "spec": { "containers": [{ "name": "c", "ports": [
            { "name": "http", "containerPort": 8080 },
            { "name": "dns", "containerPort": 53, "protocol": "UDP" },
            { "name": "both", "containerPort": 54, "protocol": "UDP" },
            { "containerPort": 54, "protocol": "TCP" },
        ]}]},
        "status": { "phase": "Running" },
    }))
}

fn resolved(service: Option<Service>) -> Resolved {
    Resolved {
        target: Target::new(Kind::Service, "web"),
        namespace: "default".into(),
        selector: Some("app=web".into()),
        service,
        pods: vec![web_pod()],
    }
}

#[test]
fn pod_ports_by_number_and_name() {
    let r = Resolved {
        service: None,
        ..resolved(None)
    };
    let p = web_pod();
    assert_eq!(r.remote_port(&p, "80").unwrap(), 80);
    assert_eq!(r.remote_port(&p, "http").unwrap(), 8080);
    assert_eq!(r.remote_port(&p, "54").unwrap(), 54);
    for (port, want) in [
        ("nope", "Pod 'web-1' does not have a named port 'nope'"),
        ("dns", "UDP protocol is not supported for dns"),
        ("53", "UDP protocol is not supported for 53"),
        ("0", "`0` is not a valid port number"),
        ("70000", "`70000` is not a valid port number"),
        ("", "remote port cannot be empty"),
    ] {
        let e = r.remote_port(&p, port).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Port);
        assert!(e.to_string().starts_with(want), "{port}: {e}");
    }
}

#[test]
fn service_ports_through_target_port() {
    let svc: Service = serde_json::from_value(json!({
        "metadata": { "name": "web" },
        "spec": { "selector": { "app": "web" }, "ports": [
            { "name": "http", "port": 80, "targetPort": "http" },
            { "name": "alt", "port": 81, "targetPort": 9090 },
            { "port": 82 },
            { "name": "dns", "port": 53, "protocol": "UDP", "targetPort": 5353 },
            { "name": "gone", "port": 83, "targetPort": "missing" },
        ]},
    }))
    .unwrap();
    let r = resolved(Some(svc));
    let p = web_pod();
    assert_eq!(r.remote_port(&p, "http").unwrap(), 8080);
    assert_eq!(r.remote_port(&p, "80").unwrap(), 8080);
    assert_eq!(r.remote_port(&p, "alt").unwrap(), 9090);
    assert_eq!(r.remote_port(&p, "82").unwrap(), 82);
    for (port, want) in [
        ("nope", "Service 'web' does not have a named port 'nope'"),
        ("8080", "Service web does not have a service port 8080"),
        ("dns", "UDP protocol is not supported for dns"),
        ("gone", "Pod 'web-1' does not have a named port 'missing'"),
    ] {
        let e = r.remote_port(&p, port).unwrap_err();
        assert!(e.to_string().starts_with(want), "{port}: {e}");
    }
}

#[test]
fn readiness_and_running() {
    let running_no_conditions = web_pod();
    assert!(is_ready(&running_no_conditions));
    assert!(check_running(&running_no_conditions).is_ok());
    let not_ready = pod(json!({
        "metadata": { "name": "a" },
        "status": { "phase": "Running", "conditions": [{ "type": "Ready", "status": "False" }] },
    }));
    assert!(!is_ready(&not_ready));
    let ready = pod(json!({
        "metadata": { "name": "b" },
        "status": { "phase": "Running", "conditions": [
            { "type": "PodScheduled", "status": "True" }, { "type": "Ready", "status": "True" },
        ] },
    }));
    assert!(is_ready(&ready));
    let pending = pod(json!({ "metadata": { "name": "c" }, "status": { "phase": "Pending" } }));
    assert!(!is_ready(&pending));
    assert_eq!(
        check_running(&pending).unwrap_err().to_string(),
        "unable to forward port because pod is not running. Current status=Pending"
    );
    let deleting = pod(json!({
        "metadata": { "name": "d", "deletionTimestamp": "2026-01-01T00:00:00Z" },
        "status": { "phase": "Running" },
    }));
    assert!(!is_ready(&deleting));
    let mut pods = vec![pending, not_ready, ready, deleting];
    sort_pods(&mut pods);
    let names: Vec<&str> = pods.iter().map(pod_name).collect();
    assert_eq!(names, ["b", "a", "d", "c"]);
    assert_eq!(ready_pods(&pods).len(), 1);
}

#[test]
fn workload_selectors_read_labels_and_expressions() {
    let t = Target::new(Kind::Deployment, "web");
    let sel: LabelSelector = serde_json::from_value(json!({
        "matchLabels": { "app": "web", "tier": "front" },
        "matchExpressions": [
            { "key": "env", "operator": "In", "values": ["a", "b"] },
            { "key": "canary", "operator": "DoesNotExist" },
        ],
    }))
    .unwrap();
    assert_eq!(
        workload_selector(&t, Some(sel)).unwrap(),
        "app=web,tier=front,env in (a,b),!canary"
    );
    let e = workload_selector(&t, Some(LabelSelector::default())).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Object);
}
