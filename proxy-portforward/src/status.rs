//! The `Status` object the API server and the kubelet answer a failed request with: a small
//! JSON body (`{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",...}`),
//! serialized with its fields in the order Kubernetes writes them.
//!
//! ```
//! use proxy_portforward::status::Status;
//!
//! let status = Status::bad_request("query parameter \"ports\" is required");
//! assert_eq!(
//!     status.to_json(),
//!     r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"query parameter \"ports\" is required","reason":"BadRequest","code":400}"#,
//! );
//! assert_eq!(Status::from_json(&status.to_json()).unwrap(), status);
//! ```

use serde::{Deserialize, Serialize};

/// `reason` of a request that is malformed (HTTP 400).
pub const REASON_BAD_REQUEST: &str = "BadRequest";
/// `reason` of a request the server refuses (HTTP 403).
pub const REASON_FORBIDDEN: &str = "Forbidden";
/// `reason` of a request for something that does not exist (HTTP 404).
pub const REASON_NOT_FOUND: &str = "NotFound";
/// `reason` of a 401.
pub const REASON_UNAUTHORIZED: &str = "Unauthorized";
/// `reason` of a failure inside the server (HTTP 500).
pub const REASON_INTERNAL_ERROR: &str = "InternalError";

/// The `metadata` of a `Status`: always empty here (`{}`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListMeta {}

/// The object a `Status` is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusDetails {
    /// The object's name.
    #[serde(default)]
    pub name: String,
    /// Its resource (`pods`, `services`, `deployments.apps`).
    #[serde(default)]
    pub kind: String,
}

/// A `Status` object (`kind: Status`, `apiVersion: v1`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    /// Always `Status`.
    pub kind: String,
    /// Always `v1`.
    pub api_version: String,
    /// Always empty.
    #[serde(default)]
    pub metadata: ListMeta,
    /// `Failure` (or `Success`).
    pub status: String,
    /// What went wrong, for a person.
    #[serde(default)]
    pub message: String,
    /// What went wrong, for a program (`BadRequest`, `Forbidden`, ...).
    #[serde(default)]
    pub reason: String,
    /// Which object, for `NotFound`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<StatusDetails>,
    /// The HTTP status code sent with it.
    #[serde(default)]
    pub code: u16,
}

impl Status {
    /// A `Failure` with this HTTP code, reason and message.
    pub fn failure(code: u16, reason: &str, message: impl Into<String>) -> Self {
        Status {
            kind: "Status".to_owned(),
            api_version: "v1".to_owned(),
            metadata: ListMeta {},
            status: "Failure".to_owned(),
            message: message.into(),
            reason: reason.to_owned(),
            details: None,
            code,
        }
    }

    /// A `Failure` with code 400 and reason `BadRequest`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::failure(400, REASON_BAD_REQUEST, message)
    }

    /// A `Failure` with code 403 and reason `Forbidden`.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::failure(403, REASON_FORBIDDEN, message)
    }

    /// A `Failure` with code 404 and reason `NotFound`, worded as the API server words it:
    /// `pods "web" not found` for `not_found("pods", "web")`. A resource of a group is
    /// named with it (`deployments.apps`).
    pub fn not_found(resource: &str, name: &str) -> Self {
        let mut status = Self::failure(
            404,
            REASON_NOT_FOUND,
            format!("{resource} \"{name}\" not found"),
        );
        status.details = Some(StatusDetails {
            name: name.to_owned(),
            kind: resource.to_owned(),
        });
        status
    }

    /// A `Failure` with code 401 and reason `Unauthorized`, as the API server answers a
    /// request whose credentials it does not accept.
    pub fn unauthorized() -> Self {
        Self::failure(401, REASON_UNAUTHORIZED, "Unauthorized")
    }

    /// The JSON body, on one line, fields in Kubernetes' order.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a Status always serializes")
    }

    /// Reads a `Status` body (as a client receives one).
    pub fn from_json(body: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forbidden_body_byte_exact() {
        assert_eq!(
            Status::forbidden("no").to_json(),
            r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"no","reason":"Forbidden","code":403}"#
        );
    }

    #[test]
    fn reads_a_body_with_fields_left_out_or_added() {
        let s = Status::from_json(
            r#"{"kind":"Status","apiVersion":"v1","status":"Failure","code":404,"details":{"name":"x"}}"#,
        )
        .unwrap();
        assert_eq!(s.code, 404);
        assert_eq!(s.message, "");
        assert_eq!(s.metadata, ListMeta {});
    }

    #[test]
    fn not_found_as_the_api_server_words_it() {
        assert_eq!(
            Status::not_found("pods", "nope").to_json(),
            r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"pods \"nope\" not found","reason":"NotFound","details":{"name":"nope","kind":"pods"},"code":404}"#
        );
        assert_eq!(
            Status::unauthorized().to_json(),
            r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"Unauthorized","reason":"Unauthorized","code":401}"#
        );
    }

    #[test]
    fn message_is_escaped() {
        let json = Status::bad_request("a \"b\"\n\u{1}").to_json();
        assert!(json.contains(r#""message":"a \"b\"\n\u0001""#), "{json}");
    }
}
