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
/// `reason` of a failure inside the server (HTTP 500).
pub const REASON_INTERNAL_ERROR: &str = "InternalError";

/// The `metadata` of a `Status`: always empty here (`{}`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListMeta {}

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
    fn message_is_escaped() {
        let json = Status::bad_request("a \"b\"\n\u{1}").to_json();
        assert!(json.contains(r#""message":"a \"b\"\n\u0001""#), "{json}");
    }
}
