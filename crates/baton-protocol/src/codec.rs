//! JSON and MessagePack, chosen by the `Content-Type` header; replies use the request's
//! encoding. Decoding checks the size and nesting limits and sorts failures into stable codes.

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::subject::header;

/// Deepest nesting either decoder accepts before any limit of the message's own (such as
/// `Limits::max_depth` on inputs) is checked: serde_json's built-in recursion limit, which
/// MessagePack decoding is held to as well. At rmp-serde's own default (1024) a plan could
/// be accepted deeper than its stored JSON can be read back.
pub const MAX_DECODE_DEPTH: usize = 128;

/// A message's encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Encoding {
    #[default]
    Json,
    MsgPack,
}

/// Why a message could not be decoded. Each variant has a stable `code`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("unsupported Content-Type {0:?}; use application/json or application/msgpack")]
    ContentType(String),
    #[error("message is {size} bytes; the limit is {limit}")]
    TooLarge { size: usize, limit: usize },
    #[error("message is not valid {encoding}: {message}")]
    Malformed {
        encoding: &'static str,
        message: String,
    },
    #[error("message does not match the expected schema: {0}")]
    Schema(String),
    #[error("message nests deeper than {0} levels")]
    TooDeep(usize),
    #[error("could not encode message: {0}")]
    Encode(String),
}

impl Error {
    pub fn code(&self) -> crate::ErrorCode {
        use crate::ErrorCode;
        match self {
            Error::ContentType(_) => ErrorCode::UnsupportedContentType,
            Error::TooLarge { .. } => ErrorCode::PayloadTooLarge,
            Error::Malformed { .. } => ErrorCode::MalformedPayload,
            Error::Schema(_) => ErrorCode::InvalidRequest,
            Error::TooDeep(_) => ErrorCode::PayloadTooDeep,
            Error::Encode(_) => ErrorCode::Internal,
        }
    }
}

impl Encoding {
    /// The encoding named by a `Content-Type` header value (none means JSON).
    pub fn from_content_type(content_type: Option<&str>) -> Result<Self, Error> {
        let Some(raw) = content_type else {
            return Ok(Encoding::Json);
        };
        let essence = raw
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        match essence.as_str() {
            "" | header::JSON => Ok(Encoding::Json),
            header::MSGPACK | "application/x-msgpack" => Ok(Encoding::MsgPack),
            _ => Err(Error::ContentType(raw.chars().take(100).collect())),
        }
    }

    /// The header value to send with this encoding.
    pub fn content_type(self) -> &'static str {
        match self {
            Encoding::Json => header::JSON,
            Encoding::MsgPack => header::MSGPACK,
        }
    }

    /// Decodes `bytes` after checking its size against `max_bytes`.
    pub fn decode<T: DeserializeOwned>(self, bytes: &[u8], max_bytes: usize) -> Result<T, Error> {
        if bytes.len() > max_bytes {
            return Err(Error::TooLarge {
                size: bytes.len(),
                limit: max_bytes,
            });
        }
        match self {
            Encoding::Json => serde_json::from_slice(bytes).map_err(|error| {
                use serde_json::error::Category;
                match error.classify() {
                    Category::Data => Error::Schema(error.to_string()),
                    // serde_json reports its recursion limit as a syntax error and offers no
                    // matchable kind for it; the message is its stable Display text.
                    Category::Syntax if error.to_string().starts_with("recursion limit") => {
                        Error::TooDeep(MAX_DECODE_DEPTH)
                    }
                    Category::Syntax | Category::Eof | Category::Io => Error::Malformed {
                        encoding: "JSON",
                        message: error.to_string(),
                    },
                }
            }),
            Encoding::MsgPack => {
                // Human-readable mode: ids and timestamps are strings, as in JSON, so a
                // MessagePack client sees the same shapes.
                let mut deserializer =
                    rmp_serde::Deserializer::from_read_ref(bytes).with_human_readable();
                deserializer.set_max_depth(MAX_DECODE_DEPTH);
                serde::Deserialize::deserialize(&mut deserializer).map_err(|error| match error {
                    rmp_serde::decode::Error::Syntax(message) => Error::Schema(message),
                    // Well-formed MessagePack of the wrong type (an array where a string
                    // belongs, a number out of range): a schema error, as in JSON.
                    rmp_serde::decode::Error::TypeMismatch(_)
                    | rmp_serde::decode::Error::OutOfRange
                    | rmp_serde::decode::Error::LengthMismatch(_) => {
                        Error::Schema(error.to_string())
                    }
                    rmp_serde::decode::Error::DepthLimitExceeded => {
                        Error::TooDeep(MAX_DECODE_DEPTH)
                    }
                    other => Error::Malformed {
                        encoding: "MessagePack",
                        message: other.to_string(),
                    },
                })
            }
        }
    }

    /// Encodes a value. Maps and structs become MessagePack maps with string keys, so any
    /// MessagePack client reads them like the JSON form.
    pub fn encode<T: Serialize>(self, value: &T) -> Result<Vec<u8>, Error> {
        match self {
            Encoding::Json => serde_json::to_vec(value).map_err(|e| Error::Encode(e.to_string())),
            Encoding::MsgPack => {
                let mut out = Vec::new();
                let mut serializer = rmp_serde::Serializer::new(&mut out)
                    .with_struct_map()
                    .with_human_readable();
                value
                    .serialize(&mut serializer)
                    .map_err(|e| Error::Encode(e.to_string()))?;
                Ok(out)
            }
        }
    }
}

/// Rejects JSON values nested deeper than `max_depth`. serde_json stops at 128 levels on its
/// own; this keeps user data well inside that so stored values can always be re-read.
pub fn check_depth(value: &Value, max_depth: usize) -> Result<(), Error> {
    let mut stack = vec![(value, 1usize)];
    while let Some((value, depth)) = stack.pop() {
        if depth > max_depth {
            return Err(Error::TooDeep(max_depth));
        }
        match value {
            Value::Array(items) => stack.extend(items.iter().map(|v| (v, depth + 1))),
            Value::Object(map) => stack.extend(map.values().map(|v| (v, depth + 1))),
            _ => {}
        }
    }
    Ok(())
}

/// The depth [`check_depth`] measures, of JSON text already known to be valid (e.g. a
/// `RawValue`), without building the value: 1 for a scalar or an empty container, else 1
/// more than its deepest member's; object keys do not count.
pub fn raw_depth(json: &str) -> usize {
    // Containers open around the scanning position; `true` marks an object.
    let mut open: Vec<bool> = Vec::new();
    let mut depth = 0;
    let (mut in_string, mut escaped, mut expect_key) = (false, false, false);
    for &byte in json.as_bytes() {
        if in_string {
            if escaped {
                escaped = false;
            } else if byte == b'\\' {
                escaped = true;
            } else if byte == b'"' {
                in_string = false;
            }
            continue;
        }
        match byte {
            b' ' | b'\n' | b'\r' | b'\t' | b':' => {}
            b',' => expect_key = open.last() == Some(&true),
            b'}' | b']' => {
                open.pop();
                expect_key = false;
            }
            b'"' if expect_key => {
                in_string = true;
                expect_key = false;
            }
            _ => {
                // A value starts (or a scalar goes on) here, inside `open.len()` containers.
                depth = depth.max(open.len() + 1);
                match byte {
                    b'"' => in_string = true,
                    b'{' | b'[' => {
                        open.push(byte == b'{');
                        expect_key = byte == b'{';
                    }
                    _ => {}
                }
            }
        }
    }
    depth
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::messages::SubmitRequest;

    #[test]
    fn raw_depth_agrees_with_the_value_depth() {
        let values = [
            json!(1),
            json!("a\\\"{[b"),
            json!({}),
            json!([]),
            json!({"a": 1}),
            json!({"a{": {}, "b": [[]], "c\"": [1, {"d": [true, null]}]}),
            json!([[[[["x"]]]], {"k": {"k": {"k": "v"}}}]),
            json!({"input": {"x": [1, 2, {"y": "]}"}]}, "needs": {"a": null}}),
        ];
        for value in values {
            for text in [
                serde_json::to_string(&value).unwrap(),
                serde_json::to_string_pretty(&value).unwrap(),
            ] {
                for max in 1..8 {
                    assert_eq!(
                        raw_depth(&text) <= max,
                        check_depth(&value, max).is_ok(),
                        "{text} at {max}"
                    );
                }
            }
        }
    }

    #[test]
    fn content_types_select_the_encoding() {
        assert_eq!(Encoding::from_content_type(None), Ok(Encoding::Json));
        assert_eq!(
            Encoding::from_content_type(Some("application/msgpack")),
            Ok(Encoding::MsgPack)
        );
        assert_eq!(
            Encoding::from_content_type(Some("application/json; charset=utf-8")),
            Ok(Encoding::Json)
        );
        assert_eq!(
            Encoding::from_content_type(Some("text/xml"))
                .unwrap_err()
                .code(),
            "unsupported_content_type"
        );
    }

    #[test]
    fn failures_have_codes() {
        let json = Encoding::Json;
        assert_eq!(
            json.decode::<SubmitRequest>(b"{\"plan\":", 100)
                .unwrap_err()
                .code(),
            "malformed_payload"
        );
        assert_eq!(
            json.decode::<SubmitRequest>(b"\xff\xfe", 100)
                .unwrap_err()
                .code(),
            "malformed_payload"
        );
        assert_eq!(
            json.decode::<SubmitRequest>(b"{\"input\":1}", 100)
                .unwrap_err()
                .code(),
            "invalid_request"
        );
        assert_eq!(
            json.decode::<SubmitRequest>(b"{\"plan\":{},\"x\":1}", 100)
                .unwrap_err()
                .code(),
            "invalid_request"
        );
        assert_eq!(
            json.decode::<SubmitRequest>(&[b' '; 101], 100)
                .unwrap_err()
                .code(),
            "payload_too_large"
        );
    }

    #[test]
    fn msgpack_round_trips_and_truncation_is_malformed() {
        let request = SubmitRequest {
            plan: json!({"steps": []}),
            input: json!({"a": [1, 2.5, "x"]}),
            idempotency_key: Some("k".into()),
            deadline_ms: None,
        };
        let bytes = Encoding::MsgPack.encode(&request).unwrap();
        assert_eq!(
            Encoding::MsgPack
                .decode::<SubmitRequest>(&bytes, 1 << 20)
                .unwrap(),
            request
        );
        let truncated = &bytes[..bytes.len() - 3];
        assert_eq!(
            Encoding::MsgPack
                .decode::<SubmitRequest>(truncated, 1 << 20)
                .unwrap_err()
                .code(),
            "malformed_payload"
        );
    }

    /// Regression: an array where a MessagePack request has a string (rmp-serde's
    /// `TypeMismatch`) was `malformed_payload`; JSON calls the same mistake `invalid_request`.
    #[test]
    fn msgpack_wrong_types_are_schema_errors() {
        let bytes = Encoding::MsgPack.encode(&json!({"job_id": [[1]]})).unwrap();
        let error = Encoding::MsgPack
            .decode::<crate::messages::StatusRequest>(&bytes, 1 << 20)
            .unwrap_err();
        assert_eq!(error.code(), "invalid_request", "{error}");
        let bytes = Encoding::MsgPack
            .encode(&json!({"job_id": "00000000-0000-0000-0000-000000000000", "step_id": "a", "attempt": 1u64 << 40}))
            .unwrap();
        let error = Encoding::MsgPack
            .decode::<crate::messages::TaskResult>(&bytes, 1 << 20)
            .unwrap_err();
        assert_eq!(error.code(), "invalid_request", "{error}");
    }

    #[test]
    fn msgpack_ids_are_strings() {
        let reply = crate::messages::SubmitReply {
            job_id: uuid::Uuid::nil(),
            existing: false,
        };
        let bytes = Encoding::MsgPack.encode(&reply).unwrap();
        let value: serde_json::Value = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(value, json!({"job_id": uuid::Uuid::nil().to_string()}));
    }

    /// Regression: JSON past serde_json's recursion limit was `malformed_payload` ("recursion
    /// limit exceeded"), and MessagePack was decoded down to 1024 levels.
    #[test]
    fn nesting_past_the_decoders_limit_is_too_deep_in_both_encodings() {
        let mut input = json!(1);
        for _ in 0..200 {
            input = json!([input]);
        }
        let request = json!({"plan": {"steps": []}, "input": input});
        for encoding in [Encoding::Json, Encoding::MsgPack] {
            let bytes = encoding.encode(&request).unwrap();
            let error = encoding
                .decode::<SubmitRequest>(&bytes, 1 << 20)
                .unwrap_err();
            assert_eq!(error.code(), "payload_too_deep", "{encoding:?}: {error}");
        }
        // Just inside the decoders' limit, the message decodes and `check_depth` decides.
        let mut input = json!(1);
        for _ in 0..100 {
            input = json!([input]);
        }
        let request = json!({"plan": {"steps": []}, "input": input});
        for encoding in [Encoding::Json, Encoding::MsgPack] {
            let bytes = encoding.encode(&request).unwrap();
            let decoded = encoding.decode::<SubmitRequest>(&bytes, 1 << 20).unwrap();
            assert_eq!(
                check_depth(&decoded.input, 64).unwrap_err().code(),
                "payload_too_deep"
            );
        }
    }

    #[test]
    fn depth_is_bounded() {
        let mut value = json!(1);
        for _ in 0..70 {
            value = json!([value]);
        }
        assert_eq!(
            check_depth(&value, 64).unwrap_err().code(),
            "payload_too_deep"
        );
        assert!(check_depth(&json!({"a": [1]}), 64).is_ok());
    }
}
