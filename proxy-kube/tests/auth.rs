//! Credentials the kubeconfig gives in other forms than a token: an exec plugin (run by
//! kube-rs, its token sent by our own connections too) and basic auth.

use std::os::unix::fs::PermissionsExt;

use proxy_kube::Client;
use proxy_portforward::server::Server;

/// A kubeconfig for `server` with `user`, in `dir`.
fn kubeconfig(dir: &std::path::Path, server: &str, user: serde_json::Value) -> std::path::PathBuf {
    let config = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{ "name": "c", "cluster": { "server": server } }],
        "users": [{ "name": "u", "user": user }],
        "contexts": [{ "name": "x", "context": { "cluster": "c", "user": "u" } }],
        "current-context": "x",
    });
    let path = dir.join("kubeconfig");
    std::fs::write(&path, config.to_string()).unwrap();
    path
}

#[tokio::test]
async fn an_exec_plugin_token_reaches_the_server_and_the_endpoint() {
    let cluster = proxy_portforward::cluster_file::parse(
        "[[pod]]\nname = \"web\"\ntarget = \"127.0.0.1\"\n",
        "x.toml",
    )
    .unwrap();
    let server = Server::builder(cluster).token("from-plugin").build();
    let listening = server
        .bind("127.0.0.1:0".parse().unwrap(), None)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let plugin = dir.path().join("credential-plugin");
    std::fs::write(
        &plugin,
        "#!/bin/sh\necho '{\"apiVersion\":\"client.authentication.k8s.io/v1\",\
         \"kind\":\"ExecCredential\",\"status\":{\"token\":\"from-plugin\"}}'\n",
    )
    .unwrap();
    std::fs::set_permissions(&plugin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let user = serde_json::json!({ "exec": {
        "apiVersion": "client.authentication.k8s.io/v1",
        "command": plugin,
        "interactiveMode": "Never",
    }});
    let path = kubeconfig(
        dir.path(),
        &format!("http://{}", listening.local_addr()),
        user,
    );
    let client = Client::builder().kubeconfig(&path).build().await.unwrap();
    let web = client.resolve(&"web".parse().unwrap()).await.unwrap();
    assert_eq!(web.pods.len(), 1);
    let endpoint = client.api_endpoint().await.unwrap();
    assert_eq!(
        endpoint.authorization.as_deref(),
        Some("Bearer from-plugin")
    );
    assert!(endpoint.tls.is_none());
    assert_eq!(endpoint.server_name, "127.0.0.1");
}

#[tokio::test]
async fn basic_auth_and_no_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let user = serde_json::json!({ "username": "admin", "password": "pw" });
    let path = kubeconfig(dir.path(), "http://127.0.0.1:1", user);
    let client = Client::builder().kubeconfig(&path).build().await.unwrap();
    let endpoint = client.api_endpoint().await.unwrap();
    // base64("admin:pw")
    assert_eq!(
        endpoint.authorization.as_deref(),
        Some("Basic YWRtaW46cHc=")
    );

    let path = kubeconfig(dir.path(), "http://127.0.0.1:1", serde_json::json!({}));
    let client = Client::builder().kubeconfig(&path).build().await.unwrap();
    let endpoint = client.api_endpoint().await.unwrap();
    assert_eq!(endpoint.authorization, None);
    assert!(
        endpoint.connect().await.is_err(),
        "nothing listens on port 1"
    );
}
