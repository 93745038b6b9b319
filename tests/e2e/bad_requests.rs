//! A table of bad requests: each must get the right 4xx, a JSON error with a stable code
//! (and the field to blame where there is one), and change nothing.

use reqwest::StatusCode;

use crate::both_dbs;
use crate::common::{Db, Reply, TestServer};

both_dbs!(bad_requests_are_rejected_and_write_nothing);

const CUSTOMERS: &str = "/api/v1/revenue/customers";
const JSON: &str = "application/json";

struct Case {
    name: &'static str,
    method: &'static str,
    path: String,
    content_type: Option<&'static str>,
    body: Vec<u8>,
    idempotency_key: Option<String>,
    status: u16,
    code: &'static str,
    field: Option<&'static str>,
}

fn post(
    name: &'static str,
    body: impl Into<Vec<u8>>,
    status: u16,
    code: &'static str,
    field: Option<&'static str>,
) -> Case {
    Case {
        name,
        method: "POST",
        path: CUSTOMERS.to_string(),
        content_type: Some(JSON),
        body: body.into(),
        idempotency_key: None,
        status,
        code,
        field,
    }
}

fn get(
    name: &'static str,
    path: String,
    status: u16,
    code: &'static str,
    field: Option<&'static str>,
) -> Case {
    Case {
        name,
        method: "GET",
        path,
        content_type: None,
        body: Vec::new(),
        idempotency_key: None,
        status,
        code,
        field,
    }
}

fn invalid(name: &'static str, body: &str, field: &'static str) -> Case {
    post(name, body, 400, "invalid_request", Some(field))
}

fn cases() -> Vec<Case> {
    let many_keys: String = (0..51)
        .map(|i| format!("\"k{i}\": \"v\""))
        .collect::<Vec<_>>()
        .join(",");
    let deep = format!(
        "{{\"email\": \"a@example.com\", \"metadata\": {}{}}}",
        "[".repeat(200),
        "]".repeat(200)
    );
    vec![
        post("malformed JSON", "{", 400, "invalid_json", None),
        post(
            "trailing garbage",
            r#"{"email": "a@example.com"} x"#,
            400,
            "invalid_json",
            None,
        ),
        post(
            "trailing comma",
            r#"{"email": "a@example.com",}"#,
            400,
            "invalid_json",
            None,
        ),
        post("empty body", "", 400, "invalid_json", None),
        post(
            "single-quoted JSON",
            "{'email': 'a@example.com'}",
            400,
            "invalid_json",
            None,
        ),
        post(
            "invalid UTF-8",
            b"{\"email\": \"a\xff\xfe@example.com\"}".to_vec(),
            400,
            "invalid_json",
            None,
        ),
        post(
            "lone surrogate escape",
            r#"{"email": "a@example.com", "name": "\ud800"}"#,
            400,
            "invalid_json",
            None,
        ),
        post(
            "array instead of object",
            "[]",
            400,
            "invalid_request",
            None,
        ),
        post(
            "string instead of object",
            r#""a@example.com""#,
            400,
            "invalid_request",
            None,
        ),
        post("null body", "null", 400, "invalid_request", None),
        invalid("email is a number", r#"{"email": 42}"#, "email"),
        invalid("email is null", r#"{"email": null}"#, "email"),
        invalid("email is an object", r#"{"email": {"a": 1}}"#, "email"),
        invalid("missing email", r#"{"name": "No Email"}"#, "email"),
        invalid(
            "unknown field",
            r#"{"email": "a@example.com", "nickname": "x"}"#,
            "nickname",
        ),
        invalid(
            "duplicate field",
            r#"{"email": "a@example.com", "email": "b@example.com"}"#,
            "email",
        ),
        invalid(
            "name is an array",
            r#"{"email": "a@example.com", "name": ["x"]}"#,
            "name",
        ),
        invalid(
            "name is empty",
            r#"{"email": "a@example.com", "name": "  "}"#,
            "name",
        ),
        invalid(
            "name too long",
            &format!(
                r#"{{"email": "a@example.com", "name": "{}"}}"#,
                "n".repeat(257)
            ),
            "name",
        ),
        invalid(
            "name has NUL",
            r#"{"email": "a@example.com", "name": "a\u0000b"}"#,
            "name",
        ),
        invalid(
            "name has a newline",
            r#"{"email": "a@example.com", "name": "a\nb"}"#,
            "name",
        ),
        invalid(
            "metadata is a list",
            r#"{"email": "a@example.com", "metadata": ["x"]}"#,
            "metadata",
        ),
        invalid(
            "metadata value is a number",
            r#"{"email": "a@example.com", "metadata": {"k": 1}}"#,
            "metadata.k",
        ),
        invalid(
            "metadata has 51 keys",
            &format!(r#"{{"email": "a@example.com", "metadata": {{{many_keys}}}}}"#),
            "metadata",
        ),
        invalid(
            "metadata key too long",
            &format!(
                r#"{{"email": "a@example.com", "metadata": {{"{}": "v"}}}}"#,
                "k".repeat(41)
            ),
            "metadata.kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk",
        ),
        invalid(
            "metadata value too long",
            &format!(
                r#"{{"email": "a@example.com", "metadata": {{"k": "{}"}}}}"#,
                "v".repeat(501)
            ),
            "metadata.k",
        ),
        invalid("not an email", r#"{"email": "not-an-email"}"#, "email"),
        invalid(
            "email with display name",
            r#"{"email": "Ann <ann@example.com>"}"#,
            "email",
        ),
        invalid(
            "email header injection",
            r#"{"email": "a@example.com\r\nBcc: victim@example.com"}"#,
            "email",
        ),
        invalid(
            "email with NUL",
            r#"{"email": "a\u0000@example.com"}"#,
            "email",
        ),
        invalid(
            "email too long",
            &format!(r#"{{"email": "{}@example.com"}}"#, "a".repeat(250)),
            "email",
        ),
        invalid(
            "email without a dot",
            r#"{"email": "root@localhost"}"#,
            "email",
        ),
        invalid(
            "SQL in email",
            r#"{"email": "x'; DROP TABLE customers; --@example.com"}"#,
            "email",
        ),
        invalid(
            "SQL tautology email",
            r#"{"email": "' OR '1'='1"}"#,
            "email",
        ),
        invalid(
            "RTL override in email",
            r#"{"email": "a\u202e@example.com"}"#,
            "email",
        ),
        post(
            "metadata nested 200 deep",
            deep,
            400,
            "invalid_request",
            Some("metadata"),
        ),
        post(
            "body over the limit",
            format!(
                r#"{{"email": "a@example.com", "name": "{}"}}"#,
                "x".repeat(300 * 1024)
            ),
            413,
            "payload_too_large",
            None,
        ),
        Case {
            content_type: Some("text/plain"),
            ..post(
                "text/plain body",
                r#"{"email": "a@example.com"}"#,
                415,
                "unsupported_media_type",
                None,
            )
        },
        Case {
            content_type: None,
            ..post(
                "no content type",
                r#"{"email": "a@example.com"}"#,
                415,
                "unsupported_media_type",
                None,
            )
        },
        Case {
            content_type: Some("application/x-www-form-urlencoded"),
            ..post(
                "form body",
                "email=a%40example.com",
                415,
                "unsupported_media_type",
                None,
            )
        },
        Case {
            idempotency_key: Some("k".repeat(300)),
            ..invalid(
                "idempotency key too long",
                r#"{"email": "a@example.com"}"#,
                "Idempotency-Key",
            )
        },
        Case {
            idempotency_key: Some("has space".into()),
            ..invalid(
                "idempotency key with a space",
                r#"{"email": "a@example.com"}"#,
                "Idempotency-Key",
            )
        },
        Case {
            method: "PUT",
            ..post(
                "PUT on a collection",
                r#"{"email": "a@example.com"}"#,
                405,
                "method_not_allowed",
                None,
            )
        },
        Case {
            method: "PATCH",
            path: format!("{CUSTOMERS}/cus_0000000000000000000000"),
            ..post(
                "PATCH on an item (changes are POSTed)",
                r#"{"email": "a@example.com"}"#,
                405,
                "method_not_allowed",
                None,
            )
        },
        Case {
            path: "/api/v1/revenue/customerz".into(),
            ..post(
                "unknown route",
                r#"{"email": "a@example.com"}"#,
                404,
                "route_not_found",
                None,
            )
        },
        get(
            "bad id characters",
            format!("{CUSTOMERS}/cus_'%20OR%201=1--"),
            404,
            "resource_missing",
            None,
        ),
        get(
            "wrong id prefix",
            format!("{CUSTOMERS}/evt_0000000000000000000000"),
            404,
            "resource_missing",
            None,
        ),
        get(
            "unicode id",
            format!("{CUSTOMERS}/cus_%F0%9F%98%80"),
            404,
            "resource_missing",
            None,
        ),
        get(
            "limit zero",
            format!("{CUSTOMERS}?limit=0"),
            400,
            "invalid_request",
            Some("limit"),
        ),
        get(
            "limit too big",
            format!("{CUSTOMERS}?limit=101"),
            400,
            "invalid_request",
            Some("limit"),
        ),
        get(
            "limit not a number",
            format!("{CUSTOMERS}?limit=ten"),
            400,
            "invalid_request",
            Some("limit"),
        ),
        get(
            "bad cursor",
            format!("{CUSTOMERS}?starting_after=1%20OR%201=1"),
            400,
            "invalid_request",
            Some("starting_after"),
        ),
        get(
            "unknown query parameter",
            format!("{CUSTOMERS}?sort=email"),
            400,
            "invalid_request",
            Some("sort"),
        ),
        Case {
            method: "DELETE",
            ..get(
                "erase a bad id",
                format!("{CUSTOMERS}/robert'); DROP TABLE customers;--"),
                404,
                "resource_missing",
                None,
            )
        },
    ]
}

async fn bad_requests_are_rejected_and_write_nothing(db: Db) {
    let s = TestServer::start(db).await;
    s.create_customer("existing@example.com").await;
    let before = (
        s.count("customers").await,
        s.count_events().await,
        s.count("idempotency_keys").await,
    );
    let cases = cases();
    assert!(cases.len() >= 30);
    let mut failures = Vec::new();
    for case in &cases {
        let mut req = s
            .client
            .request(case.method.parse().unwrap(), s.url(&case.path))
            .bearer_auth(&s.admin)
            .body(case.body.clone());
        if let Some(ct) = case.content_type {
            req = req.header("content-type", ct);
        }
        if let Some(k) = &case.idempotency_key {
            req = req.header("idempotency-key", k);
        }
        let resp = req.send().await.unwrap();
        let content_type = resp
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string());
        let r = Reply::from(resp).await;
        let ok = r.status == StatusCode::from_u16(case.status).unwrap()
            && r.code() == case.code
            && r.field() == case.field
            && content_type.as_deref() == Some(JSON)
            && r.body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty());
        if !ok {
            failures.push(format!(
                "{}: expected {} {} {:?}, got {} {}",
                case.name, case.status, case.code, case.field, r.status, r.body
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    let after = (
        s.count("customers").await,
        s.count_events().await,
        s.count("idempotency_keys").await,
    );
    assert_eq!(before, after, "a rejected request changed data");
    assert_eq!(
        s.get(&s.admin, "/api/v1/revenue/customers/").await.status,
        StatusCode::NOT_FOUND,
        "the table survived and a trailing slash is just an unknown route"
    );
}
